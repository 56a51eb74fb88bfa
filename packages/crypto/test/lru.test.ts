import { describe, expect, it } from "vitest";
import { LruCache } from "../src/lru.ts";

function keysOf(cache: LruCache<string, number>, candidates: readonly string[]): string[] {
  return candidates.filter((k) => cache.get(k) !== undefined);
}

describe("LruCache", () => {
  it("evicts the least recently used entry, counting gets as uses", () => {
    const cache = new LruCache<string, number>(3);
    cache.set("a", 1);
    cache.set("b", 2);
    cache.set("c", 3);
    expect(cache.get("a")).toBe(1); // a is now the newest: b is the oldest
    cache.set("d", 4);
    expect(cache.size).toBe(3);
    expect(cache.get("b")).toBeUndefined();
    expect(cache.get("c")).toBe(3);
  });

  it("getting the newest entry again keeps the order (a fresh string with the same text too)", () => {
    const cache = new LruCache<string, number>(2);
    cache.set("x", 1);
    cache.set("y", 2);
    expect(cache.get(["y"].join(""))).toBe(2);
    expect(cache.get("y")).toBe(2);
    cache.set("z", 3); // x is the oldest
    expect(cache.get("x")).toBeUndefined();
    expect(cache.get("y")).toBe(2);
    expect(cache.get("z")).toBe(3);
  });

  it("after deleting the newest entry, a get of an older one still makes it the newest", () => {
    const cache = new LruCache<string, number>(2);
    cache.set("p", 1);
    cache.set("q", 2);
    cache.delete("q");
    cache.set("r", 3); // order p, r
    expect(cache.get("p")).toBe(1); // order r, p
    cache.set("s", 4); // evicts r
    expect(keysOf(cache, ["p", "q", "r", "s"])).toEqual(["p", "s"]);
  });

  it("a size of 0 keeps nothing", () => {
    const cache = new LruCache<string, number>(0);
    cache.set("a", 1);
    expect(cache.size).toBe(0);
    expect(cache.get("a")).toBeUndefined();
  });
});
