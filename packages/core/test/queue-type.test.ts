import { createService } from "@nuropb/core";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createMesh } from "./helpers.ts";

// The service's queue type and redelivery budget reach the transport's queue declaration.

let mesh: ReturnType<typeof createMesh>;
afterEach(async () => {
  await mesh.cleanup();
});

class Jobs {
  work(): string {
    return "done";
  }
}

describe("createService queueType / deliveryLimit", () => {
  it("passes a quorum queue type and its delivery limit into the service queue spec", async () => {
    mesh = createMesh();
    const transport = mesh.transport();
    const consume = vi.spyOn(transport, "consumeService");
    const service = createService({
      transport,
      name: "jobs",
      instance: new Jobs(),
      queueType: "quorum",
      deliveryLimit: 5,
    });
    mesh.defer(() => service.disconnect());
    await service.connect();
    expect(consume).toHaveBeenCalledTimes(1);
    expect(consume.mock.calls[0]?.[0]).toMatchObject({
      service: "jobs",
      queueType: "quorum",
      deliveryLimit: 5,
    });
  });

  it("leaves both out of the spec by default (the transport's classic queue)", async () => {
    mesh = createMesh();
    const transport = mesh.transport();
    const consume = vi.spyOn(transport, "consumeService");
    const service = createService({ transport, name: "jobs", instance: new Jobs() });
    mesh.defer(() => service.disconnect());
    await service.connect();
    const spec = consume.mock.calls[0]?.[0];
    expect(spec).toBeDefined();
    expect(spec).not.toHaveProperty("queueType");
    expect(spec).not.toHaveProperty("deliveryLimit");
  });

  it("refuses a bad queue type or delivery limit at once", () => {
    mesh = createMesh();
    const transport = mesh.transport();
    const base = { transport, name: "jobs", instance: new Jobs() };
    expect(() => createService({ ...base, queueType: "stream" as never })).toThrow(
      /options\.queueType must be "classic" or "quorum"/,
    );
    expect(() => createService({ ...base, queueType: "quorum", deliveryLimit: 0 })).toThrow(
      /options\.deliveryLimit must be a positive integer/,
    );
    expect(() => createService({ ...base, queueType: "quorum", deliveryLimit: 1.5 })).toThrow(
      TypeError,
    );
    expect(() => createService({ ...base, deliveryLimit: 3 })).toThrow(/needs queueType/);
  });
});
