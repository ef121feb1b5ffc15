import { type DocumentNode, type FragmentDefinitionNode, Kind, type SelectionSetNode } from 'graphql';
import { StowageError } from '../../errors.js';

/**
 * Bounds that reject abusive queries before validation and execution: the text's size and token count
 * (enforced by parse), then nesting depth, field selections and aliases counted over every operation
 * with fragments expanded (memoised, so a fragment "bomb" is counted, not walked, exponentially).
 * The standard introspection query fits.
 */

export interface QueryLimits {
  maxQueryBytes: number;
  maxTokens: number;
  maxDepth: number;
  maxFields: number;
  maxAliases: number;
  /** Nesting of list and object values, in literals and in variables. */
  maxValueDepth: number;
}

export const DEFAULT_LIMITS: QueryLimits = { maxQueryBytes: 16 * 1024, maxTokens: 3000, maxDepth: 15, maxFields: 500, maxAliases: 30, maxValueDepth: 32 };

interface Cost {
  depth: number;
  fields: number;
  aliases: number;
}

export function measureDocument(doc: DocumentNode): Cost {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of doc.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  const memo = new Map<string, Cost>();
  const active = new Set<string>();

  const fragmentCost = (name: string): Cost => {
    const known = memo.get(name);
    if (known) return known;
    const def = fragments.get(name);
    // Unknown and cyclic spreads are validation errors; count them as nothing here.
    if (!def || active.has(name)) return { depth: 0, fields: 0, aliases: 0 };
    active.add(name);
    const cost = setCost(def.selectionSet);
    active.delete(name);
    memo.set(name, cost);
    return cost;
  };

  const setCost = (set: SelectionSetNode): Cost => {
    const total: Cost = { depth: 0, fields: 0, aliases: 0 };
    const add = (c: Cost, extraDepth: number) => {
      total.depth = Math.max(total.depth, c.depth + extraDepth);
      total.fields += c.fields;
      total.aliases += c.aliases;
    };
    for (const sel of set.selections) {
      if (sel.kind === Kind.FIELD) {
        const child = sel.selectionSet ? setCost(sel.selectionSet) : { depth: 0, fields: 0, aliases: 0 };
        add({ depth: child.depth, fields: child.fields + 1, aliases: child.aliases + (sel.alias ? 1 : 0) }, 1);
      } else if (sel.kind === Kind.INLINE_FRAGMENT) {
        add(setCost(sel.selectionSet), 0);
      } else {
        add(fragmentCost(sel.name.value), 0);
      }
    }
    return total;
  };

  const total: Cost = { depth: 0, fields: 0, aliases: 0 };
  for (const d of doc.definitions) {
    if (d.kind !== Kind.OPERATION_DEFINITION) continue;
    const c = setCost(d.selectionSet);
    total.depth = Math.max(total.depth, c.depth);
    total.fields += c.fields;
    total.aliases += c.aliases;
  }
  return total;
}

/** The deepest nesting of list and object literals anywhere in the document (walked without recursion). */
export function valueDepth(doc: DocumentNode): number {
  let deepest = 0;
  const stack: Array<{ node: unknown; depth: number }> = [{ node: doc, depth: 0 }];
  while (stack.length > 0) {
    const { node, depth } = stack.pop() as { node: unknown; depth: number };
    if (node === null || typeof node !== 'object') continue;
    const kind = (node as { kind?: unknown }).kind;
    const nested = kind === Kind.LIST || kind === Kind.OBJECT ? depth + 1 : depth;
    if (nested > deepest) deepest = nested;
    for (const [key, child] of Object.entries(node)) {
      if (key === 'loc') continue;
      if (Array.isArray(child)) for (const c of child) stack.push({ node: c, depth: nested });
      else if (child && typeof child === 'object') stack.push({ node: child, depth: nested });
    }
  }
  return deepest;
}

/** Throws QUERY_TOO_COMPLEX naming the first bound the document passes. */
export function checkLimits(doc: DocumentNode, limits: QueryLimits = DEFAULT_LIMITS): void {
  const depth = valueDepth(doc);
  if (depth > limits.maxValueDepth) throw tooComplex(`the query nests list or object values ${depth} levels deep; at most ${limits.maxValueDepth} are allowed`);
  const c = measureDocument(doc);
  if (c.depth > limits.maxDepth) throw tooComplex(`the query nests ${c.depth} levels deep; at most ${limits.maxDepth} are allowed`);
  if (c.aliases > limits.maxAliases) throw tooComplex(`the query uses ${c.aliases} aliases; at most ${limits.maxAliases} are allowed`);
  if (c.fields > limits.maxFields) throw tooComplex(`the query selects ${c.fields} fields; at most ${limits.maxFields} are allowed`);
}

export function checkQuerySize(query: string, limits: QueryLimits = DEFAULT_LIMITS): void {
  const bytes = Buffer.byteLength(query, 'utf8');
  if (bytes > limits.maxQueryBytes) throw tooComplex(`the query is ${bytes} bytes long; at most ${limits.maxQueryBytes} are allowed`);
}

function tooComplex(message: string): StowageError {
  return new StowageError('QUERY_TOO_COMPLEX', message);
}
