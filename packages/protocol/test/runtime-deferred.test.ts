import { describe, expect, it } from "vitest";
import { createDeferred } from "@nuropb/protocol";
import type { Deferred } from "@nuropb/protocol";
import {
  createDeferredByHand,
  createDeferredNative,
  hasPromiseWithResolvers,
} from "../src/runtime.ts";

// createDeferred is Promise.withResolvers on Node 22 and later and a hand-written deferred on
// Node 20. Both ways are checked on every line that has them: the hand-written one everywhere,
// the native one where the line has it (scripts/test-node-lines.sh runs this on Node 22 and 24).

const MAJOR = Number(process.versions.node.split(".")[0]);
const WAYS: readonly { name: string; make: <T>() => Deferred<T> }[] = [
  { name: "by hand", make: createDeferredByHand },
  ...(hasPromiseWithResolvers
    ? [{ name: "Promise.withResolvers", make: createDeferredNative }]
    : []),
];

/** "pending" unless `p` has settled by the time queued microtasks have run. */
async function stateOf(p: Promise<unknown>): Promise<string> {
  const pending = {};
  const first = await Promise.race([
    p.then(
      (v) => ({ v }),
      (e: unknown) => ({ e }),
    ),
    Promise.resolve(pending),
  ]);
  return first === pending ? "pending" : JSON.stringify(first);
}

describe("createDeferred", () => {
  it("is Promise.withResolvers exactly where the Node line has it (22 and later)", () => {
    expect(hasPromiseWithResolvers).toBe(MAJOR >= 22);
    expect(createDeferred).toBe(
      hasPromiseWithResolvers ? createDeferredNative : createDeferredByHand,
    );
  });

  for (const { name, make } of WAYS) {
    describe(name, () => {
      it("stays pending until resolved, then keeps its first value", async () => {
        const d = make<number>();
        expect(d.promise).toBeInstanceOf(Promise);
        expect(await stateOf(d.promise)).toBe("pending");
        d.resolve(1);
        d.resolve(2);
        d.reject(new Error("late"));
        await expect(d.promise).resolves.toBe(1);
      });

      it("rejects with the reason given, and keeps it", async () => {
        const d = make<number>();
        const reason = new Error("no");
        d.reject(reason);
        d.resolve(1);
        await expect(d.promise).rejects.toBe(reason);
      });

      it("follows a promise it is resolved with", async () => {
        const inner = make<string>();
        const d = make<string>();
        d.resolve(inner.promise);
        expect(await stateOf(d.promise)).toBe("pending");
        inner.resolve("x");
        await expect(d.promise).resolves.toBe("x");
      });

      it("gives each call its own promise and functions", () => {
        const a = make<void>();
        const b = make<void>();
        expect(a.promise).not.toBe(b.promise);
        expect(a.resolve).not.toBe(b.resolve);
      });
    });
  }
});
