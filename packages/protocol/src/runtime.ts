/**
 * What the running Node line offers beyond Node 20, detected once when this module loads.
 * Internal to `@nuropb/protocol` (not exported from the package): every use keeps a path that
 * works on Node 20.
 */

/**
 * The third argument `JSON.parse` hands a reviver on Node 22 and later (TC39 "JSON.parse source
 * text access", shipped in V8 11.4): `source` is the text of a primitive value as written.
 */
export interface JsonReviverContext {
  readonly source?: string;
}

/** Whether `JSON.parse` gives a reviver each primitive's source text (Node 22, 24; not 20). */
export const hasJsonParseSource: boolean = detectJsonParseSource();

function detectJsonParseSource(): boolean {
  let source: unknown;
  JSON.parse("[1e0]", (key: string, value: unknown, context?: JsonReviverContext) => {
    if (key === "0") source = context?.source;
    return value;
  });
  return source === "1e0";
}
