import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NuropbError } from "@nuropb/protocol";
import { createClient, createService } from "@nuropb/core";
import { createMesh } from "./helpers.ts";

// A handler may return a value (answered without a promise of the service's own), a promise, or
// any other thenable: each is answered as `await` would see it.

/** A thenable that is not a Promise: settles through `then` only. */
function thenable(settle: (ok: (v: unknown) => void, fail: (e: unknown) => void) => void): {
  then(ok: (v: unknown) => void, fail: (e: unknown) => void): void;
} {
  return { then: (ok, fail) => settle(ok, fail) };
}

class Results {
  plain(params: { n: number }): number {
    return params.n + 1;
  }
  promised(params: { n: number }): Promise<number> {
    return Promise.resolve(params.n + 2);
  }
  thenableValue(params: { n: number }): unknown {
    return thenable((ok) => ok(params.n + 3));
  }
  thenableFailure(): unknown {
    return thenable((_ok, fail) => fail(new RangeError("thenable says no")));
  }
  /** A function with a `then` method is a thenable too. */
  thenableFunction(): unknown {
    return Object.assign(() => "not called", {
      then: (ok: (v: unknown) => void) => ok("from a function's then"),
    });
  }
}

describe("handler results", () => {
  let mesh: ReturnType<typeof createMesh>;
  let client: ReturnType<typeof createClient>;

  beforeEach(async () => {
    mesh = createMesh();
    const service = createService({
      transport: mesh.transport(),
      name: "results",
      instance: new Results(),
    });
    client = createClient({ transport: mesh.transport(), defaultTtlMs: 2000 });
    await service.connect();
    await client.connect();
    mesh.defer(() => client.disconnect());
    mesh.defer(() => service.disconnect());
  });
  afterEach(async () => {
    await mesh.cleanup();
  });

  it("answers a value, a promise and a thenable alike", async () => {
    expect(await client.request("results", "plain", { n: 1 })).toBe(2);
    expect(await client.request("results", "promised", { n: 1 })).toBe(3);
    expect(await client.request("results", "thenableValue", { n: 1 })).toBe(4);
    expect(await client.request("results", "thenableFunction")).toBe("from a function's then");
  });

  it("answers a thenable's rejection as the handler's failure", async () => {
    const failed = client.request("results", "thenableFailure");
    await expect(failed).rejects.toBeInstanceOf(NuropbError);
    await expect(failed).rejects.toMatchObject({ wireName: "NuropbException" });
    await expect(failed).rejects.toThrow(/thenableFailure/);
  });
});
