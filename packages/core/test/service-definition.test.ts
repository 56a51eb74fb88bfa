import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NuropbHandlingError } from "@nuropb/protocol";
import { createClient, createService } from "@nuropb/core";
import { createMesh } from "./helpers.ts";

let mesh: ReturnType<typeof createMesh>;
beforeEach(() => {
  mesh = createMesh();
});
afterEach(async () => {
  await mesh.cleanup();
});

/** Counts how often its getters run. */
class WithGetters {
  getterRuns = 0;
  ping(): string {
    return "pong";
  }
  /** A getter that hands out a function: not a method. */
  get sneaky(): () => string {
    this.getterRuns++;
    return () => "leaked";
  }
  get explodes(): never {
    this.getterRuns++;
    throw new Error("a getter ran");
  }
}

/** A getter nearer on the prototype chain hides a method of the same name further up. */
class Base {
  shadowed(): string {
    return "base method";
  }
  inherited(): string {
    return "inherited";
  }
}
class Derived extends Base {}
Object.defineProperty(Derived.prototype, "shadowed", {
  get: () => () => "from the getter",
  configurable: true,
});

describe("service methods are data properties holding functions", () => {
  it("never runs a getter while creating the service", () => {
    const instance = new WithGetters();
    createService({ transport: mesh.transport(), name: "g", instance });
    expect(instance.getterRuns).toBe(0);
  });

  it("a getter returning a function is neither callable nor described", async () => {
    const instance = new WithGetters();
    const service = createService({ transport: mesh.transport(), name: "g", instance });
    await service.connect();
    mesh.defer(() => service.disconnect());
    const client = createClient({ transport: mesh.transport(), defaultTtlMs: 2000 });
    await client.connect();
    mesh.defer(() => client.disconnect());

    expect(await client.request("g", "ping")).toBe("pong");
    const err: unknown = await client.request("g", "sneaky").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbHandlingError);
    expect((err as NuropbHandlingError).description).toBe("Unknown method sneaky");
    const methods = Object.keys(service.describe().methods);
    expect(methods).toEqual(["ping"]);
    expect(instance.getterRuns).toBe(0);
  });

  it("the nearest definition wins: a getter shadowing an inherited method hides it", () => {
    const service = createService({
      transport: mesh.transport(),
      name: "d",
      instance: new Derived(),
    });
    expect(Object.keys(service.describe().methods).sort()).toEqual(["inherited"]);
  });

  it("a getter named handleEvent is not an event hook", () => {
    const instance = {
      get handleEvent(): () => void {
        throw new Error("a getter ran");
      },
    };
    expect(() =>
      createService({ transport: mesh.transport(), name: "e", instance, eventBindings: ["a.b"] }),
    ).toThrow(/no handleEvent\(event, ctx\) method/);
  });

  it("the methods option naming a getter throws TypeError", () => {
    const instance = new WithGetters();
    expect(() =>
      createService({
        transport: mesh.transport(),
        name: "g",
        instance,
        methods: { sneaky: { description: "x" } },
      }),
    ).toThrow(TypeError);
    expect(() =>
      createService({
        transport: mesh.transport(),
        name: "g",
        instance,
        methods: { explodes: {} },
      }),
    ).toThrow(/'methods.explodes' names no method/);
    expect(instance.getterRuns).toBe(0);
  });
});
