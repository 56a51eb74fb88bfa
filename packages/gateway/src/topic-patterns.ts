import { assertTopicPattern } from "@nuropb/protocol";

/**
 * Checks a concrete topic (what an event is published to): non-empty dot-separated words, no
 * `*` or `#`.
 * @throws TypeError naming the problem.
 */
export function assertTopic(topic: unknown): asserts topic is string {
  if (typeof topic !== "string" || topic === "") {
    throw new TypeError("a topic must be a non-empty string");
  }
  for (const w of topic.split(".")) {
    if (w === "") throw new TypeError(`topic '${topic}' has an empty word`);
    if (w.includes("*") || w.includes("#")) {
      throw new TypeError(`topic '${topic}' holds a wildcard: publish to a concrete topic`);
    }
  }
}

/**
 * True when every topic `inner` matches is matched by `outer` (AMQP topic patterns: `*` one
 * word, `#` zero or more). Conservative: it may answer false for an odd pair that is in fact
 * covered (`*.#` inside `#.*`), never true for one that is not. Both must be well formed.
 */
export function patternCovers(outer: string, inner: string): boolean {
  const o = outer.split(".");
  const i = inner.split(".");
  // reach[j]: the first j words of `inner` are consumed by the words of `outer` walked so far.
  let reach = new Uint8Array(i.length + 1);
  reach[0] = 1;
  for (const w of o) {
    const next = new Uint8Array(i.length + 1);
    if (w === "#") {
      // `#` in outer swallows any run of inner words, wildcards included.
      let any = false;
      for (let j = 0; j <= i.length; j++) {
        any ||= reach[j] === 1;
        if (any) next[j] = 1;
      }
    } else {
      for (let j = 0; j < i.length; j++) {
        if (reach[j] !== 1) continue;
        const iw = i[j];
        // `*` covers one literal word or one `*`; a literal covers only itself. Neither covers
        // an inner `#` (which may stand for zero or several words).
        if (iw === "#") continue;
        if (w === "*" || w === iw) next[j + 1] = 1;
      }
    }
    reach = next;
  }
  return reach[i.length] === 1;
}

/**
 * Checks a list of topic patterns from the options and returns a frozen copy.
 * @throws TypeError naming the bad entry.
 */
export function checkPatterns(list: unknown, where: string): readonly string[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw new TypeError(`${where} must be an array of topic patterns`);
  return Object.freeze(
    list.map((p: unknown, n) => {
      try {
        assertTopicPattern(p as string);
      } catch (err) {
        throw new TypeError(`${where}[${String(n)}]: ${(err as Error).message}`);
      }
      return p as string;
    }),
  );
}
