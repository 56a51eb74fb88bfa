import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createClient, createService, serveHealth, type HealthServer } from "@nuropb/core";
import { createMesh } from "./helpers.ts";

class Shop {
  ping(): string {
    return "pong";
  }
}

let mesh: ReturnType<typeof createMesh>;
let server: HealthServer | undefined;
beforeEach(() => {
  mesh = createMesh();
});
afterEach(async () => {
  await server?.close();
  server = undefined;
  await mesh.cleanup();
});

async function get(path: string, method = "GET") {
  if (server === undefined) throw new Error("no server");
  const res = await fetch(`http://127.0.0.1:${server.port}${path}`, { method });
  const text = await res.text();
  return { status: res.status, body: text === "" ? undefined : (JSON.parse(text) as unknown) };
}

describe("serveHealth", () => {
  it("is live while no participant has closed, ready while all are connected", async () => {
    const service = createService({
      transport: mesh.transport(),
      name: "shop",
      instance: new Shop(),
    });
    const client = createClient({ transport: mesh.transport() });
    server = await serveHealth({ participants: [service, client], port: 0, host: "127.0.0.1" });

    // Created, not yet connected: alive, not ready.
    expect((await get("/healthz")).status).toBe(200);
    expect(await get("/readyz")).toEqual({
      status: 503,
      body: {
        status: "unavailable",
        participants: [
          { name: "shop", connected: false, closed: false },
          { name: "client", connected: false, closed: false },
        ],
      },
    });

    await service.connect();
    await client.connect();
    expect(await get("/readyz")).toMatchObject({ status: 200, body: { status: "ok" } });
    expect((await get("/readyz?verbose=1")).status).toBe(200);
    expect(await get("/readyz", "HEAD")).toEqual({ status: 200, body: undefined });

    // Closed for good: neither ready nor alive (restart the process).
    await service.disconnect();
    expect((await get("/readyz")).status).toBe(503);
    await expect.poll(async () => (await get("/healthz")).status).toBe(503);
    await client.disconnect();
  });

  it("answers 404 elsewhere and 405 to other methods", async () => {
    const client = createClient({ transport: mesh.transport() });
    server = await serveHealth({ participants: [client], port: 0, host: "127.0.0.1" });
    expect((await get("/metrics")).status).toBe(404);
    expect((await get("/healthz", "POST")).status).toBe(405);
  });

  it("closes twice without error, and as an async disposable", async () => {
    const client = createClient({ transport: mesh.transport() });
    const s = await serveHealth({ participants: [client], port: 0, host: "127.0.0.1" });
    await s.close();
    await s.close();
    {
      await using t = await serveHealth({ participants: [client], port: 0, host: "127.0.0.1" });
      expect(t.port).toBeGreaterThan(0);
    }
  });

  it("refuses bad options at once", () => {
    const client = createClient({ transport: mesh.transport() });
    expect(() => serveHealth({ participants: [], port: 0 })).toThrow(TypeError);
    expect(() => serveHealth({ participants: [client], port: -1 })).toThrow(/port/);
    expect(() => serveHealth({ participants: [client], port: 1.5 })).toThrow(/port/);
    expect(() => serveHealth({ participants: [{}] as never, port: 0 })).toThrow(/participants/);
    expect(() => serveHealth({ participants: [client], port: 0, host: "" })).toThrow(/host/);
  });
});
