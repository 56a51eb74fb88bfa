import { describe, expect, it } from "vitest";
import { createEventChannel } from "@nuropb/protocol";

/** Collects everything an iterable yields until it ends. */
async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const e of iterable) out.push(e);
  return out;
}

describe("createEventChannel", () => {
  it("every iterator gets every event, in order, and ends on end()", async () => {
    const ch = createEventChannel<number>();
    const a = collect(ch.iterate());
    const b = collect(ch.iterate());
    ch.emit(1);
    ch.emit(2);
    await Promise.resolve();
    ch.emit(3);
    ch.end();
    await expect(a).resolves.toEqual([1, 2, 3]);
    await expect(b).resolves.toEqual([1, 2, 3]);
  });

  it("a slow consumer gets everything buffered", async () => {
    const ch = createEventChannel<string>();
    const it = ch.iterate()[Symbol.asyncIterator]();
    ch.emit("x");
    ch.emit("y");
    ch.emit("z");
    ch.end();
    expect(await it.next()).toEqual({ done: false, value: "x" });
    expect(await it.next()).toEqual({ done: false, value: "y" });
    expect(await it.next()).toEqual({ done: false, value: "z" });
    expect(await it.next()).toEqual({ done: true, value: undefined });
  });

  it("a waiting next() is woken by emit and by end", async () => {
    const ch = createEventChannel<number>();
    const it = ch.iterate()[Symbol.asyncIterator]();
    const first = it.next();
    ch.emit(7);
    expect(await first).toEqual({ done: false, value: 7 });
    const second = it.next();
    ch.end();
    expect(await second).toEqual({ done: true, value: undefined });
  });

  it("an iterator only sees events emitted after it started", async () => {
    const ch = createEventChannel<number>();
    ch.emit(0);
    const late = collect(ch.iterate());
    ch.emit(1);
    ch.end();
    await expect(late).resolves.toEqual([1]);
  });

  it("iterating after end() finishes at once; emit after end() is ignored", async () => {
    const ch = createEventChannel<number>();
    ch.end();
    ch.emit(1);
    await expect(collect(ch.iterate())).resolves.toEqual([]);
    ch.end(); // idempotent
  });

  it("breaking out of one loop leaves the others running", async () => {
    const ch = createEventChannel<number>();
    const seenByQuitter: number[] = [];
    const quitter = (async () => {
      for await (const e of ch.iterate()) {
        seenByQuitter.push(e);
        break;
      }
    })();
    const stayer = collect(ch.iterate());
    ch.emit(1);
    await quitter;
    ch.emit(2);
    ch.end();
    expect(seenByQuitter).toEqual([1]);
    await expect(stayer).resolves.toEqual([1, 2]);
  });

  it("return() ends an iterator that is not being awaited", async () => {
    const ch = createEventChannel<number>();
    const it = ch.iterate()[Symbol.asyncIterator]();
    ch.emit(1);
    expect(await it.return?.()).toEqual({ done: true, value: undefined });
    ch.emit(2);
    expect(await it.next()).toEqual({ done: true, value: undefined });
  });

  it("on() calls back for each event until unsubscribed, and not for end()", () => {
    const ch = createEventChannel<string>();
    const seen: string[] = [];
    const other: string[] = [];
    const off = ch.on((e) => seen.push(e));
    ch.on((e) => other.push(e));
    ch.emit("a");
    ch.emit("b");
    off();
    ch.emit("c");
    ch.end();
    ch.emit("d");
    expect(seen).toEqual(["a", "b"]);
    expect(other).toEqual(["a", "b", "c"]);
  });

  it("a subscriber added or removed while emitting does not disturb that emit", () => {
    const ch = createEventChannel<number>();
    const seen: string[] = [];
    let offB: () => void = () => undefined;
    ch.on((e) => {
      seen.push(`a${String(e)}`);
      offB();
      ch.on((x) => seen.push(`c${String(x)}`));
    });
    offB = ch.on((e) => seen.push(`b${String(e)}`));
    ch.emit(1);
    expect(seen).toEqual(["a1", "b1"]);
  });
});

describe("a finished stream", () => {
  it("answers every later next() with done, after end() and after return()", async () => {
    const ch = createEventChannel<number>();
    const a = ch.iterate()[Symbol.asyncIterator]();
    const b = ch.iterate()[Symbol.asyncIterator]();
    ch.emit(1);
    ch.end();
    expect(await a.next()).toEqual({ done: false, value: 1 });
    expect(await a.next()).toEqual({ done: true, value: undefined });
    expect(await a.next()).toEqual({ done: true, value: undefined });
    await b.return?.();
    expect(await b.next()).toEqual({ done: true, value: undefined });
    expect(await b.next()).toEqual({ done: true, value: undefined });
  });
});
