/**
 * True when an AMQP topic `pattern` matches `topic`: words are dot-separated, `*` matches exactly
 * one word, `#` zero or more. Shared by transports that route events themselves. As in RabbitMQ,
 * the empty string is zero words (so `#` matches it and `*` does not), while `"a..b"` has an empty
 * middle word.
 */
export function topicMatches(pattern: string, topic: string): boolean {
  return matchWords(topicWords(pattern), 0, topicWords(topic), 0);
}

function topicWords(s: string): readonly string[] {
  return s === "" ? [] : s.split(".");
}

function matchWords(p: readonly string[], i: number, t: readonly string[], j: number): boolean {
  while (i < p.length) {
    const w = p[i];
    if (w === "#") {
      if (i === p.length - 1) return true;
      for (let k = j; k <= t.length; k++) if (matchWords(p, i + 1, t, k)) return true;
      return false;
    }
    if (j >= t.length) return false;
    if (w !== "*" && w !== t[j]) return false;
    i++;
    j++;
  }
  return j === t.length;
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
