import { createService } from "@nuropb/core";
import type { MeshMethodOptions, MeshService, RequestContext } from "@nuropb/core";
import { createServiceKeys } from "@nuropb/crypto";
import { NuropbValidationError } from "@nuropb/protocol";
import type { EventType, Transport } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { delay } from "@nuropb/transport-testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestMesh, rabbitEnv } from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";
import { startAmqpSniffer } from "../src/amqp-sniffer.ts";
import type { AmqpSniffer, SniffedPublish } from "../src/amqp-sniffer.ts";
import { pythonPeerScript, startPythonPeer } from "../src/python-peer.ts";
import type { PeerReply, PythonPeer } from "../src/python-peer.ts";

// A LIVE Python NuroPb 0.1.8 client (integration-tests/python/nuropb_peer.py, started once for
// this file and driven over stdin) calls a TypeScript service on the harness's RabbitMQ:
// requests, commands, events, describe, authorisation and rsa-fernet encryption. Every AMQP
// connection goes through one sniffer, so the tests can see what was encrypted on the wire.

const T = 15_000;
/** How long we watch to show that nothing more happens (no response to a command). */
const QUIET_MS = 500;
const TS = "ts_interop";
const GOOD = "Bearer good-token";

/** A Python response dict (RMQAPI.request with rpc_response=False). */
interface PyResponse {
  readonly tag: "response";
  readonly result: unknown;
  readonly error: { readonly error: string; readonly description: string } | null;
  readonly correlation_id: string;
  readonly trace_id: string | null;
  readonly context: Record<string, unknown>;
}

/** The types the TypeScript handler received, leaf by leaf ("typeof:String(value)"). */
function typeTree(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(typeTree);
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, typeTree(v)]));
  }
  return `${value === null ? "null" : typeof value}:${String(value)}`;
}

/** The TypeScript service the Python client calls. */
class TsInterop {
  readonly commands: { params: unknown; context: unknown; encrypted: boolean }[] = [];
  readonly events: EventType[] = [];
  echo(params: { value: unknown }): unknown {
    return params.value;
  }
  async echo_async(params: { value: unknown }): Promise<unknown> {
    await delay(1);
    return params.value;
  }
  type_tree(params: { value: unknown }): unknown {
    return typeTree(params.value);
  }
  fail_sync(params: { message: string }): never {
    throw new Error(params.message);
  }
  async fail_async(params: { message: string }): Promise<never> {
    await delay(1);
    throw new TypeError(params.message);
  }
  validated(params: { count: number }): number {
    return params.count * 2;
  }
  whoami(params: { note: string }, ctx: RequestContext): unknown {
    return { claims: ctx.userClaims, note: params.note };
  }
  secret_echo(params: { value: unknown }, ctx: RequestContext): unknown {
    return { value: params.value, encrypted: ctx.encrypted };
  }
  secret_fail(params: { message: string }): never {
    throw new NuropbValidationError(params.message);
  }
  remember(params: { key: string; value: unknown }, ctx: RequestContext): void {
    this.commands.push({ params, context: ctx.context, encrypted: ctx.encrypted });
  }
  _private(): string {
    return "never reachable";
  }
  handleEvent(event: EventType): void {
    this.events.push(event);
  }
}

const METHODS: Record<string, MeshMethodOptions> = {
  echo: {
    description: "Returns value unchanged",
    params: { type: "object", required: ["value"], properties: { value: {} } },
  },
  validated: {
    params: {
      type: "object",
      required: ["count"],
      properties: { count: { type: "integer", minimum: 0 } },
      additionalProperties: false,
    },
  },
  whoami: {
    authorize: (token) => (token === GOOD ? { user: "alice", scope: "interop" } : null),
    params: { type: "object", properties: { note: { type: "string" } } },
  },
  secret_echo: { requiresEncryption: true },
  secret_fail: { requiresEncryption: true },
};

let mesh: TestMesh;
let sniffer: AmqpSniffer;
let peer: PythonPeer;
let transport: Transport;
let service: MeshService<TsInterop>;

beforeAll(async () => {
  mesh = await createTestMesh("pylive-py-client");
  sniffer = await startAmqpSniffer(Number(new URL(rabbitEnv().amqpUrl).port));
  const url = `amqp://guest:guest@127.0.0.1:${sniffer.port}/${mesh.vhost}`;
  transport = createAmqpTransport({ url });
  service = createService({
    transport,
    name: TS,
    instance: new TsInterop(),
    methods: METHODS,
    keys: createServiceKeys(),
    serviceVersion: "3.2.1",
    description: "TypeScript side of the live interop tests",
    eventBindings: ["interop.to_ts.#"],
  });
  // The service and its queue exist before the Python client starts calling.
  await service.connect();
  peer = await startPythonPeer({
    script: pythonPeerScript("nuropb_peer.py"),
    config: { amqp_url: url, client: true, services: [] },
  });
});

afterAll(async () => {
  await peer?.stop();
  await service?.disconnect();
  await transport?.close();
  await sniffer?.close();
  await mesh?.teardown();
});

/** The peer's value, failing the test with Python's exception when the op raised. */
function valueOf<TValue>(reply: PeerReply<TValue>): TValue {
  if (!reply.ok) {
    throw new Error(`Python raised ${reply.error.class}: ${reply.error.description}`);
  }
  return reply.value;
}

/** A request by the Python client (rpc_response=False: the whole response dict). */
async function pyRequest(
  method: string,
  params: Record<string, unknown>,
  options: { context?: Record<string, unknown>; encrypted?: boolean; trace_id?: string } = {},
): Promise<PyResponse> {
  return valueOf(
    await peer.call<PyResponse>("request", { service: TS, method, params, ...options }, T),
  );
}

/** What went over the wire for one correlation id, in order. */
function wireFor(correlationId: string): SniffedPublish[] {
  return sniffer.publishes.filter((p) => p.properties["correlation-id"] === correlationId);
}

const header = (p: SniffedPublish | undefined, name: string): unknown =>
  (p?.properties.headers as Record<string, unknown> | undefined)?.[name];

/** An rsa-fernet body: base64(RSA part) "." base64(Fernet token), never JSON. */
const RSA_FERNET_BODY = /^[A-Za-z0-9+/]+={0,2}\.Z0FBQUFB[A-Za-z0-9+/]*={0,2}$/;

const NESTED = {
  order: {
    id: "A-1",
    lines: [
      { sku: "x", qty: 2, price: 9.5 },
      { sku: "y", qty: 1 },
    ],
  },
  flags: [true, false, null],
  empty: { list: [], map: {} },
  deep: { a: { b: { c: { d: { e: ["f"] } } } } },
};
const UNICODE = {
  text: "Grüße, 你好, Ωμέγα, עברית, ﷺ",
  nonBmp: "𝄞 🎉 😀 𠜎 🀄",
  joined: "👩‍👩‍👧 ✈️",
  ["ключ-🔑"]: "значение",
  controls: 'tab\tnewline\nquote"backslash\\nul\u0000',
};
const INT64 = {
  max: 9223372036854775807n,
  min: -9223372036854775808n,
  list: [2n ** 60n, -(2n ** 55n) - 1n, 42],
};

describe("describe: a Python client reads a TypeScript service's description", () => {
  it("methods keyed by name, requires_encryption, encrypted_methods and the RSA public key", async () => {
    const d = valueOf(await peer.call<Record<string, unknown>>("describe", { service: TS }, T)) as {
      methods: Record<string, { requires_encryption: boolean; parameters: unknown }>;
    } & Record<string, unknown>;
    expect(d).toMatchObject({
      service_name: TS,
      service_version: "3.2.1",
      description: "TypeScript side of the live interop tests",
      encrypted_methods: true,
    });
    expect(d.public_key).toMatch(/^-----BEGIN PUBLIC KEY-----\n[\s\S]+-----END PUBLIC KEY-----\n$/);
    expect(Object.keys(d.methods).sort()).toEqual(
      [
        "echo",
        "echo_async",
        "fail_async",
        "fail_sync",
        "remember",
        "secret_echo",
        "secret_fail",
        "type_tree",
        "validated",
        "whoami",
      ].sort(),
    );
    expect(d.methods.secret_echo?.requires_encryption).toBe(true);
    expect(d.methods.echo?.requires_encryption).toBe(false);
    expect(d.methods.validated?.parameters).toMatchObject({
      type: "object",
      properties: { count: { type: "integer" } },
      required: ["count"],
    });
    expect(
      valueOf(await peer.call("requires_encryption", { service: TS, method: "secret_echo" })),
    ).toBe(true);
    expect(valueOf(await peer.call("requires_encryption", { service: TS, method: "echo" }))).toBe(
      false,
    );
    expect(valueOf(await peer.call("has_public_key", { service: TS }))).toBe(true);
  });

  it("every method's parameters has properties", async () => {
    const d = valueOf(
      await peer.call<{ methods: Record<string, { parameters: object }> }>(
        "describe",
        { service: TS },
        T,
      ),
    );
    for (const [name, m] of Object.entries(d.methods)) {
      expect(m.parameters, name).toHaveProperty("properties");
    }
  });
});

describe("request/response: Python client → TypeScript service", () => {
  it("nested values round-trip, through a sync and an async handler", async () => {
    for (const method of ["echo", "echo_async"]) {
      const r = await pyRequest(method, { value: NESTED }, { context: { origin: "py" } });
      expect(r).toMatchObject({ tag: "response", result: NESTED, error: null });
      expect(r.context).toEqual({ origin: "py" });
    }
  });

  it("unicode, non-BMP characters included, round-trips and reaches TypeScript as the same text", async () => {
    expect((await pyRequest("echo", { value: UNICODE })).result).toEqual(UNICODE);
    expect((await pyRequest("type_tree", { value: UNICODE.nonBmp })).result).toBe(
      `string:${UNICODE.nonBmp}`,
    );
  });

  it("int64 extremes reach the TypeScript handler as exact bigints and come back as exact ints", async () => {
    expect((await pyRequest("type_tree", { value: INT64 })).result).toEqual({
      max: "bigint:9223372036854775807",
      min: "bigint:-9223372036854775808",
      list: ["bigint:1152921504606846976", "bigint:-36028797018963969", "number:42"],
    });
    // The echo comes back to Python, which reports its ints exactly: the same bigints.
    expect((await pyRequest("echo", { value: INT64 })).result).toEqual(INT64);
  });

  it("a ~1 MB value round-trips", async () => {
    const big = {
      blob: "nuropb-∑-".repeat(70_000),
      rows: Array.from({ length: 10_000 }, (_, i) => ({ i, name: `row ${i} ✓` })),
    };
    expect(Buffer.byteLength(JSON.stringify(big))).toBeGreaterThan(1_000_000);
    expect((await pyRequest("echo", { value: big })).result).toEqual(big);
  });

  it("the trace id the Python client sets comes back in the response", async () => {
    const r = await pyRequest("echo", { value: 1 }, { trace_id: "py-trace-1" });
    expect(r.trace_id).toBe("py-trace-1");
  });
});

describe("errors from a TypeScript service, as a Python client sees them", () => {
  it("a plain Error in a sync handler: NuropbException 'Runtime exception calling …'", async () => {
    const r = await pyRequest("fail_sync", { message: "sync boom ✗" });
    expect(r.result).toBeNull();
    expect(r.error).toEqual({
      error: "NuropbException",
      description: "Runtime exception calling ts_interop.fail_sync:Error: sync boom ✗",
    });
  });

  it("a plain Error in an async handler: the same form (no Python quirk copied)", async () => {
    const r = await pyRequest("fail_async", { message: "async boom" });
    expect(r.error).toEqual({
      error: "NuropbException",
      description: "Runtime exception calling ts_interop.fail_async:TypeError: async boom",
    });
  });

  it("params failing the method's JSON Schema: NuropbValidationError", async () => {
    for (const params of [{ count: "x" }, { count: 1, extra: true }, {}]) {
      const r = await pyRequest("validated", params);
      expect(r.error?.error).toBe("NuropbValidationError");
      expect(r.error?.description).toMatch(/^invalid params for ts_interop\.validated: /);
    }
    expect((await pyRequest("validated", { count: 21 })).result).toBe(42);
  });

  it("an unknown method, a private _method and the event hook: NuropbHandlingError", async () => {
    for (const method of ["no_such_method", "_private", "handleEvent"]) {
      expect((await pyRequest(method, {})).error).toEqual({
        error: "NuropbHandlingError",
        description: `Unknown method ${method}`,
      });
    }
  });

  it("with rpc_response=True the Python client raises NuropbMessageError with the description", async () => {
    const reply = await peer.call(
      "request",
      { service: TS, method: "no_such_method", params: {}, rpc_response: true },
      T,
    );
    expect(reply).toEqual({
      type: "reply",
      id: expect.any(Number),
      ok: false,
      error: { class: "NuropbMessageError", description: "Unknown method no_such_method" },
    });
  });

  it("exactly one response per failed request (Python services send two)", async () => {
    const r = await pyRequest("fail_sync", { message: "once" });
    await delay(QUIET_MS);
    expect(wireFor(r.correlation_id).filter((p) => p.exchange === "")).toHaveLength(1);
  });
});

describe("authorisation by a TypeScript service's authorize", () => {
  it("a good token: the handler sees the claims", async () => {
    const r = await pyRequest("whoami", { note: "hi" }, { context: { Authorization: GOOD } });
    expect(r).toMatchObject({
      error: null,
      result: { claims: { user: "alice", scope: "interop" }, note: "hi" },
    });
  });

  it("a refused token: NuropbAuthorizationError", async () => {
    const r = await pyRequest(
      "whoami",
      { note: "hi" },
      { context: { Authorization: "Bearer wrong" } },
    );
    expect(r.error).toEqual({
      error: "NuropbAuthorizationError",
      description: "not authorised to call ts_interop.whoami",
    });
  });

  it("no token: NuropbAuthenticationError", async () => {
    const r = await pyRequest("whoami", { note: "hi" }, { context: { origin: "py" } });
    expect(r.error).toEqual({
      error: "NuropbAuthenticationError",
      description: "ts_interop.whoami needs a token in context['Authorization']",
    });
  });
});

describe("rsa-fernet: a Python client encrypts for a TypeScript service holding an RSA key", () => {
  it("an encrypted call is answered encrypted, and both bodies are ciphertext on the wire", async () => {
    const value = { secret: "🔐 top secret", n: 7 };
    const r = await pyRequest("secret_echo", { value }, { encrypted: true });
    expect(r).toMatchObject({ error: null, result: { value, encrypted: true } });
    const wire = wireFor(r.correlation_id);
    const request = wire.find((p) => p.exchange === "nuropb-rpc-exchange");
    const response = wire.find((p) => p.exchange === "");
    expect(header(request, "encrypted")).toBe("yes");
    expect(request?.body.toString("latin1")).toMatch(RSA_FERNET_BODY);
    expect(header(response, "encrypted")).toBe("yes");
    expect(response?.body.toString("latin1")).toMatch(RSA_FERNET_BODY);
  });

  it("a plaintext call to a method requiring encryption is refused", async () => {
    const r = await pyRequest("secret_echo", { value: 1 });
    expect(r.error?.error).toBe("NuropbAuthorizationError");
    expect(r.error?.description).toBe("ts_interop.secret_echo requires an encrypted call");
  });

  it("an encrypted call that fails gets an encrypted error response the Python client reads", async () => {
    const r = await pyRequest("secret_fail", { message: "sealed refusal" }, { encrypted: true });
    expect(r.error).toEqual({ error: "NuropbValidationError", description: "sealed refusal" });
    const response = wireFor(r.correlation_id).find((p) => p.exchange === "");
    expect(header(response, "encrypted")).toBe("yes");
    expect(response?.body.toString("latin1")).toMatch(RSA_FERNET_BODY);
  });
});

/** The command the TypeScript service got with `params.key === key` (waits for it). */
async function commandWith(key: string): Promise<TsInterop["commands"][number]> {
  const find = (): TsInterop["commands"][number] | undefined =>
    service.instance.commands.find((c) => (c.params as { key?: unknown }).key === key);
  await expect.poll(() => find() !== undefined, { timeout: T }).toBe(true);
  return find() as TsInterop["commands"][number];
}

/** The event the TypeScript service got on `topic` (waits for it). */
async function eventOn(topic: string): Promise<EventType> {
  const find = (): EventType | undefined => service.instance.events.find((e) => e.topic === topic);
  await expect.poll(() => find() !== undefined, { timeout: T }).toBe(true);
  return find() as EventType;
}

/** The command the Python client published whose body holds `marker`. */
function publishedCommand(marker: string): SniffedPublish | undefined {
  return sniffer.publishes.find(
    (p) => header(p, "nuropb_type") === "command" && p.body.includes(marker),
  );
}

describe("commands: Python client → TypeScript service", () => {
  it("a command is handled with its params and context, and never answered", async () => {
    const key = `cmd-${Date.now()}`;
    valueOf(
      await peer.call("command", {
        service: TS,
        method: "remember",
        params: { key, value: { n: 1, s: "ü" } },
        context: { origin: "py" },
      }),
    );
    expect(await commandWith(key)).toEqual({
      params: { key, value: { n: 1, s: "ü" } },
      context: { origin: "py" },
      encrypted: false,
    });
    const sent = publishedCommand(key);
    expect(sent).toMatchObject({
      exchange: "nuropb-rpc-exchange",
      routingKey: TS,
      mandatory: true,
    });
    await delay(QUIET_MS);
    const id = sent?.properties["correlation-id"] as string;
    expect(wireFor(id).filter((p) => p.exchange === "")).toEqual([]);
  });

  it("an encrypted command is decrypted by the TypeScript service", async () => {
    const key = `enc-cmd-${Date.now()}`;
    valueOf(
      await peer.call("command", {
        service: TS,
        method: "remember",
        params: { key, value: "sealed" },
        encrypted: true,
      }),
    );
    expect(await commandWith(key)).toMatchObject({
      params: { key, value: "sealed" },
      encrypted: true,
    });
  });
});

describe("events: Python publish_event → TypeScript handleEvent", () => {
  it("reaches the hook with topic, event, target (null), context and trace id", async () => {
    const topic = "interop.to_ts.ping";
    const event = { n: 1, text: "grüß 𝄞", nested: { list: [1.5, null, true] } };
    valueOf(
      await peer.call("publish_event", {
        topic,
        event,
        context: { origin: "py" },
        trace_id: "py-event-trace",
      }),
    );
    expect(await eventOn(topic)).toMatchObject({
      topic,
      event,
      target: null,
      context: { origin: "py" },
      traceId: "py-event-trace",
    });
  });

  it("int64 extremes in an event payload reach TypeScript as exact bigints", async () => {
    const topic = "interop.to_ts.int64";
    valueOf(await peer.call("publish_event", { topic, event: INT64 }));
    expect((await eventOn(topic)).event).toEqual(INT64);
  });
});
