import { describe, expect, it } from "vitest";
import { assertTopicPattern, topicMatches } from "@nuropb/protocol";

// AMQP topic-exchange semantics: dot-separated words, `*` exactly one word, `#` zero or more.
const TABLE: readonly (readonly [pattern: string, topic: string, matches: boolean])[] = [
  // literal words
  ["a.b.c", "a.b.c", true],
  ["a.b.c", "a.b", false],
  ["a.b", "a.b.c", false],
  ["a.b", "a.B", false],
  ["test-event", "test-event", true],
  ["test_service.test-event", "test_service.test-event", true],
  ["test_service.test-event", "test_service.test-events", false],
  // `*`: exactly one word
  ["*", "a", true],
  ["*", "a.b", false],
  ["*.b", "a.b", true],
  ["*.b", "b", false],
  ["a.*", "a", false],
  ["a.*", "a.b", true],
  ["a.*", "a.b.c", false],
  ["*.*", "a.b", true],
  ["*.*", "a", false],
  ["a.*.c", "a.xyz.c", true],
  ["a.*.c", "a.c", false],
  ["orders.*", "orders.created", true],
  ["orders.*", "orders.created.eu", false],
  ["orders.*", "orders", false],
  // `#` alone: everything
  ["#", "a", true],
  ["#", "a.b.c.d.e", true],
  ["#", "", true],
  // `#` at the end / start
  ["a.#", "a", true],
  ["a.#", "a.b", true],
  ["a.#", "a.b.c", true],
  ["a.#", "b.a", false],
  ["a.#", "ab", false],
  ["a.#", "ab.c", false],
  ["#.c", "c", true],
  ["#.c", "a.b.c", true],
  ["#.c", "a.b.c.d", false],
  ["#.c", "a.bc", false],
  // `#` in the middle: zero or more words
  ["a.#.b", "a.b", true],
  ["a.#.b", "a.x.b", true],
  ["a.#.b", "a.x.y.b", true],
  ["a.#.b", "a.b.c", false],
  ["a.#.b", "b", false],
  ["a.#.b", "a", false],
  ["a.#.b.#.c", "a.b.c", true],
  ["a.#.b.#.c", "a.x.b.y.z.c", true],
  ["a.#.b.#.c", "a.c.b", false],
  // `*` and `#` together
  ["*.#", "a", true],
  ["*.#", "a.b.c", true],
  ["#.*", "a", true],
  ["#.*", "a.b", true],
  ["*.#.*", "a", false],
  ["*.#.*", "a.b", true],
  ["*.#.*", "a.b.c.d", true],
  ["a.*.#", "a", false],
  ["a.*.#", "a.b", true],
  ["a.*.#", "a.b.c", true],
  ["#.#", "a.b", true],
  ["#.a.#", "a", true],
  ["#.a.#", "x.a.y", true],
  ["#.a.#", "x.b.y", false],
  // empty words are words
  ["a.*.b", "a..b", true],
  ["a..b", "a..b", true],
  ["a.b", "a..b", false],
  // the empty topic is zero words (RabbitMQ splits it so; amqp-topic-oracle checks against it)
  ["*", "", false],
  ["*.#", "", false],
  ["#.#", "", true],
  ["a.#", "", false],
  ["*", ".", false],
  ["*.*", ".", true],
];

describe("topicMatches", () => {
  it.each(TABLE)("%j on %j → %s", (pattern, topic, expected) => {
    expect(topicMatches(pattern, topic)).toBe(expected);
  });

  it("many # in a pattern cost time in proportion, not exponentially (no backtracking)", () => {
    const pattern = [...Array(30).fill("#"), "x"].join(".");
    const topic = Array(200).fill("a").join(".");
    // Backtracking would try C(230, 30) splits here: this would not return in a lifetime.
    expect(topicMatches(pattern, topic)).toBe(false);
    expect(topicMatches(pattern, `${topic}.x`)).toBe(true);
    expect(topicMatches([...Array(30).fill("#.*")].join("."), topic)).toBe(true);
  });

  it("the symbols in a topic are ordinary characters", () => {
    expect(topicMatches("a.b", "a.*")).toBe(false);
    expect(topicMatches("a.*", "a.*")).toBe(true);
    expect(topicMatches("a.#", "a.#")).toBe(true);
  });
});

describe("assertTopicPattern", () => {
  it.each(["a", "*", "#", "a.b", "a.*.#", "#.c", "orders.created", "test_service.test-event"])(
    "accepts %j",
    (pattern) => {
      expect(() => assertTopicPattern(pattern)).not.toThrow();
    },
  );

  it.each([
    ["", /must be a non-empty string/],
    ["a..b", /'a\.\.b' has an empty word/],
    ["a.", /'a\.' has an empty word/],
    [".a", /'\.a' has an empty word/],
    [".", /has an empty word/],
    ["a*", /'\*' and '#' must stand alone as a word/],
    ["#a", /must stand alone/],
    ["a.b*c", /must stand alone/],
    ["a.##", /must stand alone/],
    ["a.*#", /must stand alone/],
  ])("refuses %j", (pattern, message) => {
    expect(() => assertTopicPattern(pattern)).toThrow(TypeError);
    expect(() => assertTopicPattern(pattern)).toThrow(message);
  });

  it.each([[123], [null], [undefined], [["a"]]])("refuses a non-string %j", (value) => {
    expect(() => assertTopicPattern(value as unknown as string)).toThrow(
      /must be a non-empty string/,
    );
  });
});
