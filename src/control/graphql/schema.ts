import {
  GraphQLBoolean,
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
 * The admin GraphQL schema, Backend.AI style, exactly as the catalog issue lists it (snake_case fields).
 * Built in code rather than from SDL so the BigInt scalar and the resolvers sit with their types;
 * test/control/graphql-*.test.ts compares printSchema() with the SDL.
 */

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
    name: { type: GraphQLString },
    humanized_name: { type: GraphQLString },
    tag: { type: GraphQLString },
    registry: { type: GraphQLString },
    digest: { type: GraphQLString },
    labels: { type: new GraphQLList(KVPair) },
    aliases: { type: new GraphQLList(GraphQLString) },
    size_bytes: { type: BigIntScalar },
    resource_limits: { type: new GraphQLList(ResourceLimit) },
    supported_accelerators: { type: new GraphQLList(GraphQLString) },
    installed: { type: GraphQLBoolean, resolve: resolve.installed },
    installed_agents: { type: new GraphQLList(GraphQLString), resolve: resolve.installedAgents },
  },
});

function result(name: string, withTask: boolean): GraphQLObjectType {
  const fields: GraphQLFieldConfigMap<unknown, GqlContext> = { ok: { type: GraphQLBoolean }, msg: { type: GraphQLString } };
  if (withTask) fields['task_id'] = { type: GraphQLString };
  return new GraphQLObjectType({ name, fields });
}

const str = { type: new GraphQLNonNull(GraphQLString) };

const Query = new GraphQLObjectType<unknown, GqlContext>({
  name: 'Query',
  fields: {
    image: { type: Image, args: { reference: str }, resolve: resolve.image },
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
  },
});

const Mutation = new GraphQLObjectType<unknown, GqlContext>({
  name: 'Mutation',
  fields: {
    rescan_images: { type: result('RescanImages', true), args: { registry: str }, resolve: resolve.rescanImages },
    preload_image: { type: result('PreloadImage', true), args: { reference: str, target_agents: str }, resolve: resolve.preloadImage },
    unload_image: { type: result('UnloadImage', true), args: { reference: str, target_agents: str }, resolve: resolve.unloadImage },
    forget_image: { type: result('ForgetImage', false), args: { reference: str }, resolve: resolve.forgetImage },
    alias_image: { type: result('AliasImage', false), args: { alias: str, target: str }, resolve: resolve.aliasImage },
    dealias_image: { type: result('DealiasImage', false), args: { alias: str }, resolve: resolve.dealiasImage },
  },
});

export const adminSchema = new GraphQLSchema({ query: Query, mutation: Mutation });
