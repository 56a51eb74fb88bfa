/**
 * True when an AMQP topic `pattern` matches `topic`: words are dot-separated, `*` matches exactly
 * one word, `#` zero or more. Shared by transports that route events themselves. As in RabbitMQ,
 * the empty string is zero words (so `#` matches it and `*` does not), while `"a..b"` has an empty
 * middle word.
 */
export function topicMatches(pattern: string, topic: string): boolean {
  return matchWords(topicWords(pattern), topicWords(topic));
}

function topicWords(s: string): readonly string[] {
  return s === "" ? [] : s.split(".");
}

/**
 * Walks the pattern once, keeping the set of topic positions reachable so far: O(pattern ×
 * topic) whatever the number of `#`, where backtracking would be exponential in it.
 */
function matchWords(p: readonly string[], t: readonly string[]): boolean {
  const n = t.length;
  let reach = new Uint8Array(n + 1);
  reach[0] = 1;
  for (const w of p) {
    const next = new Uint8Array(n + 1);
    let any = false;
    for (let j = 0; j <= n; j++) {
      if (w === "#") {
        any ||= reach[j] === 1;
        if (any) next[j] = 1;
      } else if (reach[j] === 1 && j < n && (w === "*" || w === t[j])) {
        next[j + 1] = 1;
        any = true;
      }
    }
    if (!any) return false;
    reach = next;
  }
  return reach[n] === 1;
}

/**
 * Checks a topic pattern is well formed (non-empty words, `*`/`#` standing alone).
 * @throws TypeError naming the problem.
 */
export function assertTopicPattern(pattern: string): void {
  if (typeof pattern !== "string" || pattern === "")
    throw new TypeError("a topic pattern must be a non-empty string");
  for (const w of pattern.split(".")) {
    if (w === "") throw new TypeError(`topic pattern '${pattern}' has an empty word`);
    if ((w.includes("*") || w.includes("#")) && w.length > 1) {
      throw new TypeError(`topic pattern '${pattern}': '*' and '#' must stand alone as a word`);
    }
  }
}
