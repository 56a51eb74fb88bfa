import { NuropbTransportError } from "@nuropb/protocol";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  buildAmqpUrl,
  buildManagementUrl,
  configureMesh,
  createVhost,
  deleteVhost,
  listVhosts,
  managementUrlFromAmqpUrl,
  teardownMesh,
} from "../src/index.ts";
import { broker } from "./fake-amqplib.ts";
import type { FakeChannel } from "./fake-amqplib.ts";

vi.mock("amqplib", async () => (await import("./fake-amqplib.ts")).fakeAmqplib);

describe("URL builders (PROTOCOL.md §2.1)", () => {
  it.each([
    ["amqp://guest:guest@localhost:5672/nuropb", "http://guest:guest@localhost:15672/api"],
    ["amqps://u:p@rabbit:5671/v", "https://u:p@rabbit:15671/api"],
    ["amqp://u:p@rabbit/v", "http://u:p@rabbit:15672/api"],
    ["amqps://rabbit/v", "https://rabbit:15671/api"],
    ["amqp://u:p@127.0.0.1:25672", "http://u:p@127.0.0.1:35672/api"],
  ])("%s → %s", (amqp, api) => {
    expect(managementUrlFromAmqpUrl(amqp)).toBe(api);
  });

  it("takes an explicit management port", () => {
    expect(managementUrlFromAmqpUrl("amqp://h:5672/v", { port: 8080 })).toBe("http://h:8080/api");
  });

  it("refuses other schemes without echoing the password", () => {
    expect(() => managementUrlFromAmqpUrl("http://u:secret-pw@h/v")).toThrow(/amqp/);
    expect(() => managementUrlFromAmqpUrl("http://u:secret-pw@h/v")).not.toThrow(/secret-pw/);
  });

  it("builds AMQP and management URLs with encoding and defaults", () => {
    expect(buildAmqpUrl({ host: "rabbit", vhost: "a/b", username: "u@x", password: "p w" })).toBe(
      "amqp://u%40x:p%20w@rabbit:5672/a%2Fb",
    );
    expect(buildAmqpUrl({ tls: true })).toBe("amqps://guest:guest@localhost:5671/nuropb");
    expect(buildManagementUrl()).toBe("http://guest:guest@localhost:15672/api");
    expect(buildManagementUrl({ tls: true, host: "r", username: "a", password: "b" })).toBe(
      "https://a:b@r:15671/api",
    );
  });
});

describe("management API calls", () => {
  const calls: { method: string; url: string; auth: string | null }[] = [];
  let vhosts: Set<string>;

  beforeEach(() => {
    calls.length = 0;
    vhosts = new Set(["/"]);
    vi.stubGlobal("fetch", async (url: string, init: RequestInit = {}) => {
      const method = init.method ?? "GET";
      const headers = new Headers(init.headers);
      calls.push({ method, url, auth: headers.get("authorization") });
      const path = new URL(url).pathname;
      if (path === "/api/vhosts") return Response.json([...vhosts].map((name) => ({ name })));
      const m = /^\/api\/vhosts\/(.+)$/.exec(path);
      if (m?.[1] !== undefined) {
        const name = decodeURIComponent(m[1]);
        if (method === "GET")
          return vhosts.has(name) ? Response.json({ name }) : new Response("", { status: 404 });
        if (method === "PUT") {
          vhosts.add(name);
          return new Response(null, { status: 201 });
        }
        if (method === "DELETE") {
          const had = vhosts.delete(name);
          return new Response(null, { status: had ? 204 : 404 });
        }
      }
      return new Response('{"error":"boom","reason":"password secret-pw leaked?"}', {
        status: 500,
      });
    });
  });
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it("creates a vhost once (GET, then PUT), with basic auth from the URL and no credentials in the URL", async () => {
    expect(await createVhost("http://admin:secret-pw@rabbit:15672/api", "m1")).toBe(true);
    expect(await createVhost("http://admin:secret-pw@rabbit:15672/api", "m1")).toBe(false);
    expect(calls.map((c) => `${c.method} ${c.url}`)).toEqual([
      "GET http://rabbit:15672/api/vhosts/m1",
      "PUT http://rabbit:15672/api/vhosts/m1",
      "GET http://rabbit:15672/api/vhosts/m1",
    ]);
    expect(calls[0]?.auth).toBe(`Basic ${Buffer.from("admin:secret-pw").toString("base64")}`);
    expect(
      await listVhosts({ url: "http://rabbit:15672/api", username: "a", password: "b" }),
    ).toEqual(["/", "m1"]);
    expect(calls.at(-1)?.auth).toBe(`Basic ${Buffer.from("a:b").toString("base64")}`);
  });

  it("deletes a vhost; deleting a missing one is false", async () => {
    vhosts.add("gone");
    expect(await deleteVhost("http://rabbit:15672/api", "gone")).toBe(true);
    expect(await deleteVhost("http://rabbit:15672/api", "gone")).toBe(false);
  });

  it("reports API failures as NuropbTransportError with the password masked", async () => {
    const err = await listVhosts("http://admin:secret-pw@rabbit:15672/api/broken").catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as Error).message).toContain("admin:****@rabbit");
    expect((err as Error).message).toContain("500");
    expect((err as Error).message).not.toContain("secret-pw");
  });

  it("configureMesh creates the vhost, then the DL exchange, DL queue + binding, events and rpc exchanges", async () => {
    broker.reset();
    const result = await configureMesh({ url: "amqp://guest:guest@rabbit:5672/m2" });
    expect(result).toMatchObject({ vhost: "m2", vhostCreated: true, existing: [] });
    expect(calls[0]?.url).toBe("http://rabbit:15672/api/vhosts/m2");
    const conn = broker.connections[0];
    expect(broker.connectCalls[0]?.url).toMatchObject({ hostname: "rabbit", vhost: "m2" });
    const declared = (conn?.channels ?? []).flatMap((c: FakeChannel) => c.declared);
    const flags = { durable: true, autoDelete: false, internal: false };
    expect(declared).toEqual([
      { queue: "exchange:nuropb-dl-exchange:fanout", options: flags },
      {
        queue: "nuropb-dl-queue",
        options: { durable: false, exclusive: false, autoDelete: false },
      },
      { queue: "exchange:nuropb-events-exchange:topic", options: flags },
      { queue: "exchange:nuropb-rpc-exchange:direct", options: flags },
    ]);
    expect(result.declared).toEqual([
      "exchange:nuropb-dl-exchange",
      "queue:nuropb-dl-queue",
      "exchange:nuropb-events-exchange",
      "exchange:nuropb-rpc-exchange",
    ]);
    const bindings = (conn?.channels ?? []).flatMap((c: FakeChannel) => c.bindings);
    expect(bindings).toEqual([["nuropb-dl-queue", "nuropb-dl-exchange", "nuropb-dl-queue"]]);
    expect(conn?.closed).toBe(true);
    // Twice: everything exists now and is only checked, never re-declared.
    const again = await configureMesh({ url: "amqp://guest:guest@rabbit:5672/m2" });
    expect(again).toMatchObject({ vhostCreated: false, declared: [] });
    expect(again.existing).toHaveLength(4);
    expect((broker.connections[1]?.channels ?? []).flatMap((c: FakeChannel) => c.declared)).toEqual(
      [],
    );
    expect(await teardownMesh({ url: "amqp://guest:guest@rabbit:5672/m2" })).toBe(true);
  });
});
