import { createService } from "@nuropb/core";
import type { RequestContext } from "@nuropb/core";
import { createServiceKeys } from "@nuropb/crypto";
import { createGateway } from "@nuropb/gateway";
import type { Gateway } from "@nuropb/gateway";
import { NuropbAuthorizationError } from "@nuropb/protocol";
import { readsBigIntegersExactly } from "../src/json-text.ts";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { afterAll, beforeAll, expect, it } from "vitest";
import { WebSocket } from "ws";
import { GatewayError, createGatewayClient } from "../src/index.ts";
import type { GatewayClient, WebSocketConstructor } from "../src/index.ts";

class Vault {
  seen: { encrypted: boolean; context: unknown }[] = [];
  store(params: { secret: string }, ctx: RequestContext): { stored: number; by: unknown } {
    this.seen.push({ encrypted: ctx.encrypted, context: ctx.context });
    return { stored: params.secret.length, by: ctx.userClaims };
  }
  refuse(): never {
    throw new NuropbAuthorizationError("not you");
  }
  log(params: { line: string }): void {
    this.lines.push(params.line);
  }
  lines: string[] = [];
  tallies: unknown[] = [];
  double(params: { n: bigint }): { n: bigint; type: string } {
    return { n: params.n * 2n, type: typeof params.n };
  }
  tally(params: { n: unknown }): string {
    this.tallies.push(params.n);
    return typeof params.n;
  }
}

const hub = createMemoryHub();
const vault = new Vault();
const serviceTransport = createMemoryTransport({ hub });
const gatewayTransport = createMemoryTransport({ hub });
const service = createService({
  transport: serviceTransport,
  name: "vault",
  instance: vault,
  keys: createServiceKeys({ rsa: true }),
  methods: {
    store: {
      requiresEncryption: true,
      authorize: (token) => token === "Bearer me" && { user: "me" },
    },
    refuse: { requiresEncryption: true },
    log: { requiresEncryption: true },
  },
});
let gateway: Gateway;
let url: string;
/** Every message the client sent, as the gateway received it. */
const wire: string[] = [];

/** `ws`, recording what goes out. */
const RecordingWebSocket = class extends WebSocket {
  override send(data: unknown): void {
    wire.push(String(data));
    super.send(data as string);
  }
} as unknown as WebSocketConstructor;

beforeAll(async () => {
  await service.connect();
  gateway = createGateway({
    transport: gatewayTransport,
    expose: { services: { vault: { requests: ["store", "tally", "double"], sealed: true } } },
  });
  url = await gateway.listen();
});
afterAll(async () => {
  await gateway.close();
  await service.disconnect();
  await serviceTransport.close();
  await gatewayTransport.close();
});

function client(token?: string): GatewayClient {
  return createGatewayClient({
    url,
    WebSocket: RecordingWebSocket,
    ...(token === undefined ? {} : { token }),
  });
}

it("seals a call in the client: the gateway forwards ciphertext, the answer opens in the client", async () => {
  const c = client("Bearer me");
  try {
    const secret = "correct horse battery staple";
    const result = await c.request("vault", "store", { secret }, { encrypted: true });
    expect(result).toEqual({ stored: secret.length, by: { user: "me" } });
    expect(vault.seen.at(-1)).toEqual({ encrypted: true, context: { Authorization: "Bearer me" } });
    // Neither the secret nor the token crossed the gateway in clear.
    const sealed = wire.filter((m) => m.includes('"sealed-request"'));
    expect(sealed).toHaveLength(1);
    expect(wire.join("\n")).not.toContain(secret);
    expect(sealed[0]).not.toContain("Bearer me");
    expect(gateway.stats().sealedPending).toBe(0);
  } finally {
    await c.close();
  }
});

it("the service's errors come back sealed and are opened as GatewayErrors", async () => {
  const c = client("Bearer someone-else");
  try {
    const err = await c
      .request("vault", "store", { secret: "x" }, { encrypted: true })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayError);
    expect(err).toMatchObject({ wireName: "NuropbAuthorizationError" });
    // A method the gateway does not list is still reached sealed: the service decides.
    const refused = await c
      .request("vault", "refuse", {}, { encrypted: true })
      .catch((e: unknown) => e);
    expect(refused).toMatchObject({ wireName: "NuropbAuthorizationError", description: "not you" });
  } finally {
    await c.close();
  }
});

it("a sealed command reaches the service", async () => {
  const c = client("Bearer me");
  try {
    await c.command("vault", "log", { line: "sealed line" }, { encrypted: true });
    await expect.poll(() => vault.lines).toEqual(["sealed line"]);
    expect(wire.join("\n")).not.toContain("sealed line");
  } finally {
    await c.close();
  }
});

it("a call not sealed by the client is sealed by the gateway's core client (the gateway reads it)", async () => {
  const c = client("Bearer me");
  try {
    wire.length = 0;
    await expect(
      c.request("vault", "store", { secret: "in clear to the gateway" }),
    ).resolves.toEqual({
      stored: 23,
      by: { user: "me" },
    });
    expect(vault.seen.at(-1)).toMatchObject({ encrypted: true });
    expect(wire.join("\n")).toContain("in clear to the gateway");
  } finally {
    await c.close();
  }
});

it("writes bigints in params as exact integers, in plain and in sealed calls", async () => {
  const c = client();
  try {
    await expect(c.request("vault", "tally", { n: 2n ** 64n })).resolves.toBe("bigint");
    await expect(
      c.request("vault", "tally", { n: 2n ** 64n + 1n }, { encrypted: true }),
    ).resolves.toBe("bigint");
    expect(vault.tallies).toEqual([2n ** 64n, 2n ** 64n + 1n]);
  } finally {
    await c.close();
  }
});

it("an integer beyond 2^53 goes out exact and comes back exact where the runtime can read it so", async () => {
  const c = client("Bearer me");
  try {
    const n = 2n ** 64n + 1n;
    for (const encrypted of [false, true]) {
      const answer = await c.request("vault", "double", { n }, { encrypted });
      // Node 22+ and current browsers read it as a bigint; Node 20 as the nearest number.
      expect(answer).toEqual({
        n: readsBigIntegersExactly ? 2n * n : Number(2n * n),
        type: "bigint",
      });
    }
  } finally {
    await c.close();
  }
});
