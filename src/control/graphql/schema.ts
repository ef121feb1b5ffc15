import {
  GraphQLBoolean,
  GraphQLInputObjectType,
  GraphQLList,
  GraphQLNonNull,
  GraphQLObjectType,
  GraphQLScalarType,
  GraphQLSchema,
  GraphQLString,
  Kind,
  type GraphQLFieldConfigMap,
} from 'graphql';
import type { GqlContext } from './context.js';
import * as resolve from './resolvers.js';

/**
 * The admin GraphQL schema: Backend.AI's image schema (its manager at 23.09, plus the newer image(id:),
 * *_by_id mutations and customized_images), so its client SDK, CLI and web UI documents validate
 * unchanged, with Stowage's own arguments beside them (domain / group / scaling_group filters, selector
 * strings for target_agents). Built in code rather than from SDL so the scalars and the resolvers sit
 * with their types; test/control/graphql-*.test.ts checks printSchema().
 */

/** Backend.AI's UUID scalar (Image.id, RescanImages.task_id): the canonical lower-case string. */
export const UUIDScalar = new GraphQLScalarType({
  name: 'UUID',
  description: 'A UUID in its canonical string form.',
  serialize(value) {
    if (typeof value === 'string' && UUID_RE.test(value)) return value.toLowerCase();
    throw new TypeError(`UUID cannot represent ${String(value).slice(0, 60)}`);
  },
  parseValue(value) {
    if (typeof value === 'string' && UUID_RE.test(value)) return value.toLowerCase();
    throw new TypeError('UUID must be a string such as "0f8fad5b-d9cb-469f-a165-70867728950e"');
  },
  parseLiteral(ast) {
    if (ast.kind === Kind.STRING && UUID_RE.test(ast.value)) return ast.value.toLowerCase();
    throw new TypeError('UUID must be a string such as "0f8fad5b-d9cb-469f-a165-70867728950e"');
  },
});
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Integers past 2^53 do not survive JSON numbers: those go out as decimal strings, as Backend.AI does. */
export const BigIntScalar = new GraphQLScalarType({
  name: 'BigInt',
  description: 'An integer; a JSON number when it is a safe integer, else a decimal string.',
  serialize(value) {
    if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
    if (typeof value === 'number' && Number.isInteger(value)) return Number.isSafeInteger(value) ? value : BigInt(value).toString();
    if (typeof value === 'string' && /^-?\d+$/.test(value)) return Number.isSafeInteger(Number(value)) ? Number(value) : value;
    throw new TypeError(`BigInt cannot represent ${String(value)}`);
  },
  parseValue(value) {
    if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
    if (typeof value === 'string' && /^-?\d{1,40}$/.test(value)) return BigInt(value);
    throw new TypeError('BigInt must be an integer or a decimal string');
  },
  parseLiteral(ast) {
    if (ast.kind === Kind.INT || (ast.kind === Kind.STRING && /^-?\d{1,40}$/.test(ast.value))) return BigInt(ast.value);
    throw new TypeError('BigInt must be an integer or a decimal string');
  },
});

const KVPair = new GraphQLObjectType({
  name: 'KVPair',
  fields: { key: { type: GraphQLString }, value: { type: GraphQLString } },
});

const ResourceLimit = new GraphQLObjectType({
  name: 'ResourceLimit',
  fields: { key: { type: GraphQLString }, min: { type: GraphQLString }, max: { type: GraphQLString } },
});

const Image = new GraphQLObjectType<resolve.ImageView, GqlContext>({
  name: 'Image',
  fields: {
    id: { type: UUIDScalar },
    name: { type: GraphQLString },
    humanized_name: { type: GraphQLString },
    tag: { type: GraphQLString },
    registry: { type: GraphQLString },
    architecture: { type: GraphQLString },
    is_local: { type: GraphQLBoolean },
    /** The config digest: the image ID `docker images` shows. */
    digest: { type: GraphQLString },
    labels: { type: new GraphQLList(KVPair) },
    aliases: { type: new GraphQLList(GraphQLString) },
    size_bytes: { type: BigIntScalar },
    resource_limits: { type: new GraphQLList(ResourceLimit) },
    supported_accelerators: { type: new GraphQLList(GraphQLString) },
    installed: { type: GraphQLBoolean, resolve: resolve.installed },
    installed_agents: { type: new GraphQLList(GraphQLString), resolve: resolve.installedAgents },
    /** Backend.AI's legacy name for the config digest. */
    hash: { type: GraphQLString },
  },
});

function result(name: string, task?: GraphQLScalarType): GraphQLObjectType {
  const fields: GraphQLFieldConfigMap<unknown, GqlContext> = { ok: { type: GraphQLBoolean }, msg: { type: GraphQLString } };
  if (task) fields['task_id'] = { type: task };
  return new GraphQLObjectType({ name, fields });
}

const str = { type: new GraphQLNonNull(GraphQLString) };
const optStr = { type: GraphQLString };
/** preload/unload: Stowage's `reference` + selector string, or the manager's `references` + `target_agents` lists. */
const catalogOpArgs = {
  reference: optStr,
  references: { type: new GraphQLList(GraphQLString) },
  // A single string is coerced to a one-item list: `target_agents: "*"` still reads as before.
  target_agents: { type: new GraphQLNonNull(new GraphQLList(GraphQLString)) },
};

const PurgeImageOptions = new GraphQLInputObjectType({
  name: 'PurgeImageOptions',
  fields: { remove_from_registry: { type: GraphQLBoolean, defaultValue: false } },
});
const PurgeImageById = new GraphQLObjectType({ name: 'PurgeImageById', fields: { image: { type: Image } } });

const Query = new GraphQLObjectType<unknown, GqlContext>({
  name: 'Query',
  fields: {
    image: { type: Image, args: { id: optStr, reference: optStr, architecture: optStr }, resolve: resolve.image },
    images: {
      type: new GraphQLList(Image),
      args: {
        is_installed: { type: GraphQLBoolean },
        is_operation: { type: GraphQLBoolean },
        domain: { type: GraphQLString },
        group: { type: GraphQLString },
        scaling_group: { type: GraphQLString },
      },
      resolve: resolve.images,
    },
    customized_images: { type: new GraphQLList(Image), resolve: resolve.customizedImages },
  },
});

const Mutation = new GraphQLObjectType<unknown, GqlContext>({
  name: 'Mutation',
  fields: {
    rescan_images: { type: result('RescanImages', UUIDScalar), args: { registry: optStr, project: optStr }, resolve: resolve.rescanImages },
    preload_image: { type: result('PreloadImage', GraphQLString), args: catalogOpArgs, resolve: resolve.preloadImage },
    unload_image: { type: result('UnloadImage', GraphQLString), args: catalogOpArgs, resolve: resolve.unloadImage },
    forget_image: { type: result('ForgetImage'), args: { reference: str, architecture: optStr }, resolve: resolve.forgetImage },
    forget_image_by_id: { type: result('ForgetImageById'), args: { image_id: str }, resolve: resolve.forgetImageById },
    purge_image_by_id: {
      type: PurgeImageById,
      args: { image_id: str, options: { type: PurgeImageOptions } },
      resolve: resolve.purgeImageById,
    },
    untag_image_from_registry: { type: result('UntagImageFromRegistry'), args: { image_id: str }, resolve: resolve.untagImageFromRegistry },
    // Backend.AI's alias_image takes an architecture; an alias names a tag here, every architecture of it.
    alias_image: { type: result('AliasImage'), args: { alias: str, target: str, architecture: optStr }, resolve: resolve.aliasImage },
    dealias_image: { type: result('DealiasImage'), args: { alias: str }, resolve: resolve.dealiasImage },
  },
});

export const adminSchema = new GraphQLSchema({ query: Query, mutation: Mutation });
