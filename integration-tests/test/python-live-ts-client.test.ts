import { createClient, createService } from "@nuropb/core";
import type { MeshClient, MeshService, RequestContext } from "@nuropb/core";
import {
  NuropbAuthorizationError,
  NuropbError,
  NuropbHandlingError,
  isNuropbError,
} from "@nuropb/protocol";
import type { EventType, Transport } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { delay } from "@nuropb/transport-testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestMesh, rabbitEnv } from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";
import { startAmqpSniffer } from "../src/amqp-sniffer.ts";
import type { AmqpSniffer, SniffedPublish } from "../src/amqp-sniffer.ts";
import { pythonPeerScript, startPythonPeer } from "../src/python-peer.ts";
import type { PeerRecord, PythonPeer } from "../src/python-peer.ts";

// TypeScript clients call a LIVE Python NuroPb 0.1.8 service (integration-tests/python/
// nuropb_peer.py, started once for this file) on the harness's RabbitMQ; events travel both
// ways; and a TypeScript and a Python instance share one service queue. Every AMQP connection
// (Python's too) goes through one sniffer, so the tests can see what was encrypted on the wire.

const T = 15_000;
/** How long we watch to show that nothing more happens (no response to a command, …). */
const QUIET_MS = 500;
const PY = "py_interop";
const SHARED = "shared_svc";
const GOOD = "Bearer good-token";

let mesh: TestMesh;
let sniffer: AmqpSniffer;
let peer: PythonPeer;
const transports: Transport[] = [];
let client: MeshClient;
let listener: MeshService<Listener>;
let sharedTs: MeshService<SharedTs>;

/** A TypeScript service that receives what Python publishes and raises events for Python. */
class Listener {
  readonly events: EventType[] = [];
  handleEvent(event: EventType): void {
    this.events.push(event);
  }
  raise_event(params: { topic: string; event: unknown }, ctx: RequestContext): string {
    ctx.addEvent({ topic: params.topic, event: params.event });
    return "raised";
  }
}

/** The TypeScript instance of the service the Python peer also serves. */
class SharedTs {
  readonly seen: number[] = [];
  whoami(params: { n: number }): { lang: string; n: number } {
    this.seen.push(params.n);
    return { lang: "typescript", n: params.n };
  }
}

function newTransport(): Transport {
  const t = createAmqpTransport({
    url: `amqp://guest:guest@127.0.0.1:${sniffer.port}/${mesh.vhost}`,
  });
  transports.push(t);
  return t;
}

beforeAll(async () => {
  mesh = await createTestMesh("pylive-ts-client");
  sniffer = await startAmqpSniffer(Number(new URL(rabbitEnv().amqpUrl).port));
  peer = await startPythonPeer({
    script: pythonPeerScript("nuropb_peer.py"),
    config: {
      amqp_url: `amqp://guest:guest@127.0.0.1:${sniffer.port}/${mesh.vhost}`,
      services: [
        { name: PY, kind: "interop", event_bindings: ["interop.to_py.#"] },
        { name: SHARED, kind: "shared" },
      ],
    },
  });
  client = createClient({ transport: newTransport() });
  listener = createService({
    transport: newTransport(),
    name: "ts_listener",
    instance: new Listener(),
    eventBindings: ["interop.from_py.#"],
  });
  sharedTs = createService({ transport: newTransport(), name: SHARED, instance: new SharedTs() });
  await Promise.all([client.connect(), listener.connect(), sharedTs.connect()]);
});

afterAll(async () => {
  await peer?.stop();
  await Promise.allSettled([client?.disconnect(), listener?.disconnect(), sharedTs?.disconnect()]);
  await Promise.allSettled(transports.map((t) => t.close()));
  await sniffer?.close();
  await mesh?.teardown();
});

/** The error a request rejected with (fails the test when it resolved). */
async function failure(p: Promise<unknown>): Promise<NuropbError> {
  try {
    await p;
  } catch (err) {
    if (isNuropbError(err)) return err as NuropbError;
    throw err;
  }
  throw new Error("the request resolved; an error was expected");
}

/** What went over the wire for one correlation id, requests first. */
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

/** About 1 MB of JSON: a long string with non-ASCII in it and many small objects. */
function largeValue(): { blob: string; rows: { i: number; name: string }[] } {
  return {
    blob: "nuropb-∑-".repeat(70_000),
    rows: Array.from({ length: 10_000 }, (_, i) => ({ i, name: `row ${i} ✓` })),
  };
}

describe("describe: a TypeScript client reads a Python service's description", () => {
  it("lists the public methods (not _private, not _handle_event_), versions, keys and params", async () => {
    const d = await client.describeService(PY, { refresh: true });
    expect(d).toMatchObject({
      service_name: PY,
      service_version: "1.2.3",
      description: "Python side of the live interop tests.",
      encrypted_methods: true,
    });
    expect(d.public_key).toMatch(/^-----BEGIN PUBLIC KEY-----\n[\s\S]+-----END PUBLIC KEY-----\n$/);
    expect(Object.keys(d.methods).sort()).toEqual(
      [
        "echo",
        "echo_async",
        "emit_events",
        "fail_async",
        "fail_sync",
        "non_finite",
        "remember",
        "secret_echo",
        "secret_fail",
        "type_tree",
        "whoami",
      ].sort(),
    );
    expect(d.methods.echo).toMatchObject({
      description: "Returns value unchanged",
      requires_encryption: false,
    });
    expect(d.methods.secret_echo?.requires_encryption).toBe(true);
    // Python's list of [name, spec] pairs arrives as a JSON Schema object (ctx left out).
    expect(d.methods.whoami?.parameters).toMatchObject({
      type: "object",
      properties: { note: { type: "string" } },
      required: ["note"],
    });
    expect(Object.keys(d.methods.secret_echo?.parameters.properties as object)).toEqual(["value"]);
    await expect(client.hasPublicKey(PY)).resolves.toBe(true);
    await expect(client.requiresEncryption(PY, "secret_echo")).resolves.toBe(true);
    await expect(client.requiresEncryption(PY, "echo")).resolves.toBe(false);
  });
});

describe("request/response: TypeScript client → Python service", () => {
  it("nested values round-trip, through a sync and an async handler", async () => {
    await expect(client.request(PY, "echo", { value: NESTED })).resolves.toEqual(NESTED);
    await expect(client.request(PY, "echo_async", { value: NESTED })).resolves.toEqual(NESTED);
  });

  it("unicode, non-BMP characters included, round-trips and reaches Python as the same text", async () => {
    await expect(client.request(PY, "echo", { value: UNICODE })).resolves.toEqual(UNICODE);
    const seen = (await client.request(PY, "type_tree", { value: UNICODE.nonBmp })) as string;
    expect(seen).toBe(`str:'${UNICODE.nonBmp}'`);
  });

  it("int64 extremes (bigint) reach Python as exact ints and come back as the same bigints", async () => {
    await expect(client.request(PY, "type_tree", { value: INT64 })).resolves.toEqual({
      max: "int:9223372036854775807",
      min: "int:-9223372036854775808",
      list: ["int:1152921504606846976", "int:-36028797018963969", "int:42"],
    });
    await expect(client.request(PY, "echo", { value: INT64 })).resolves.toEqual(INT64);
  });

  it("JSON types arrive as the matching Python types", async () => {
    await expect(
      client.request(PY, "type_tree", {
        value: { n: 1, f: 1.5, s: "x", b: true, z: null, l: [0] },
      }),
    ).resolves.toEqual({
      n: "int:1",
      f: "float:1.5",
      s: "str:'x'",
      b: "bool:True",
      z: "NoneType:None",
      l: ["int:0"],
    });
  });

  it("NaN and the infinities Python writes as bare tokens arrive as those numbers", async () => {
    await expect(client.request(PY, "non_finite")).resolves.toEqual({
      nan: Number.NaN,
      inf: Number.POSITIVE_INFINITY,
      ninf: Number.NEGATIVE_INFINITY,
      list: [1.5, Number.NaN],
    });
  });

  it("a ~1 MB value round-trips", async () => {
    const big = largeValue();
    expect(Buffer.byteLength(JSON.stringify(big))).toBeGreaterThan(1_000_000);
    await expect(client.request(PY, "echo", { value: big })).resolves.toEqual(big);
  });
});

describe("errors from a Python service, as a TypeScript client sees them", () => {
  it("a plain exception in a sync handler: NuropbException 'Runtime exception calling …'", async () => {
    const err = await failure(client.request(PY, "fail_sync", { message: "sync boom ✗" }));
    expect(err.wireName).toBe("NuropbException");
    expect(err.description).toBe(
      "Runtime exception calling py_interop.fail_sync:ValueError: sync boom ✗",
    );
  });

  it("a plain exception in an async handler keeps its raw class name ([PY-QUIRK])", async () => {
    const err = await failure(client.request(PY, "fail_async", { message: "async boom" }));
    expect(err.wireName).toBe("RuntimeError");
    expect(err.description).toBe("async boom");
  });

  it("a wrong parameter name: a TypeError runtime error naming the parameter", async () => {
    const err = await failure(client.request(PY, "echo", { valu: 1 }));
    expect(err.wireName).toBe("NuropbException");
    expect(err.description).toMatch(/^Runtime exception calling py_interop\.echo:TypeError: /);
    expect(err.description).toContain("'valu'");
  });

  it("an unknown method, a private _method and the event hook: NuropbHandlingError", async () => {
    for (const method of ["no_such_method", "_private", "_handle_event_"]) {
      const err = await failure(client.request(PY, method, {}));
      expect(err).toBeInstanceOf(NuropbHandlingError);
      expect(err.description).toBe(`Unknown method ${method}`);
    }
  });

  it("the duplicate second response Python sends for a failure is ignored", async () => {
    const r = await client.request(
      PY,
      "fail_sync",
      { message: "twice" },
      {},
      {
        rpcResponse: false,
      },
    );
    expect(r.error?.error).toBe("NuropbException");
    // Python answers a failed request twice ([PY-BUG] §7.3); the client took the first.
    await expect
      .poll(() => wireFor(r.correlation_id).filter((p) => p.exchange === "").length, {
        timeout: T,
      })
      .toBe(2);
    expect(client.pendingRequests).toBe(0);
    await expect(client.request(PY, "echo", { value: "still fine" })).resolves.toBe("still fine");
  });
});

describe("authorisation by a Python service's authorise_func", () => {
  it("a good token: the handler sees the claims", async () => {
    await expect(
      client.request(PY, "whoami", { note: "hi" }, { Authorization: GOOD }),
    ).resolves.toEqual({ claims: { user: "alice", scope: "interop" }, note: "hi" });
  });

  it("a refused token: NuropbAuthorizationError with Python's description", async () => {
    const err = await failure(
      client.request(PY, "whoami", { note: "hi" }, { Authorization: "Bearer wrong" }),
    );
    expect(err).toBeInstanceOf(NuropbAuthorizationError);
    expect(err.description).toBe("token refused: Bearer wrong");
  });

  it("no token: Python's KeyError runtime error ([PY-QUIRK] §6.1)", async () => {
    const err = await failure(client.request(PY, "whoami", { note: "hi" }, { origin: "ts" }));
    expect(err.wireName).toBe("NuropbException");
    expect(err.description).toBe(
      "Runtime exception calling py_interop.whoami:KeyError: 'Authorization'",
    );
  });
});

describe("rsa-fernet: a TypeScript client encrypts for a Python service (key from describe)", () => {
  it("an encrypted call is answered encrypted, and both bodies are ciphertext on the wire", async () => {
    const value = { secret: "🔐 top secret", n: 7 };
    const r = await client.request(
      PY,
      "secret_echo",
      { value },
      { origin: "enc" },
      {
        encrypted: true,
        rpcResponse: false,
      },
    );
    expect(r.error).toBeNull();
    expect(r.result).toEqual({ value, context: { origin: "enc" } });
    const [request, response] = wireFor(r.correlation_id);
    expect(request).toMatchObject({ exchange: "nuropb-rpc-exchange", routingKey: PY });
    expect(header(request, "encrypted")).toBe("yes");
    expect(request?.body.toString("latin1")).toMatch(RSA_FERNET_BODY);
    expect(response).toMatchObject({ exchange: "" });
    expect(header(response, "encrypted")).toBe("yes");
    expect(response?.body.toString("latin1")).toMatch(RSA_FERNET_BODY);
  });

  it("a method the description marks requires_encryption is encrypted by default", async () => {
    await client.describeService(PY);
    const r = await client.request(PY, "secret_echo", { value: 1 }, {}, { rpcResponse: false });
    expect(r.result).toEqual({ value: 1, context: {} });
    expect(header(wireFor(r.correlation_id)[0], "encrypted")).toBe("yes");
  });

  it("an encrypted call that fails gets an encrypted error response the client reads", async () => {
    const r = await client.request(
      PY,
      "secret_fail",
      { message: "secret boom" },
      {},
      {
        encrypted: true,
        rpcResponse: false,
      },
    );
    expect(r.result).toBeNull();
    expect(r.error).toEqual({
      error: "NuropbException",
      description: "Runtime exception calling py_interop.secret_fail:ValueError: secret boom",
    });
    const response = wireFor(r.correlation_id).find((p) => p.exchange === "");
    expect(header(response, "encrypted")).toBe("yes");
    expect(response?.body.toString("latin1")).toMatch(RSA_FERNET_BODY);
    // Rebuilt as an error when rpcResponse is left at true.
    const err = await failure(
      client.request(PY, "secret_fail", { message: "again" }, {}, { encrypted: true }),
    );
    expect(err.wireName).toBe("NuropbException");
  });
});

/** The command the TypeScript client published whose body holds `marker`. */
async function publishedCommand(marker: string): Promise<SniffedPublish> {
  await expect
    .poll(
      () =>
        sniffer.publishes.some(
          (p) => header(p, "nuropb_type") === "command" && p.body.includes(marker),
        ),
      { timeout: T },
    )
    .toBe(true);
  return sniffer.publishes.find(
    (p) => header(p, "nuropb_type") === "command" && p.body.includes(marker),
  ) as SniffedPublish;
}

describe("commands: TypeScript client → Python service", () => {
  it("a command is handled with its params and context, and never answered", async () => {
    const key = `cmd-${Date.now()}`;
    await client.command(PY, "remember", { key, value: { n: 1, s: "ü" } }, { origin: "ts" });
    const rec = await peer.waitForRecord((r) => r.kind === "command" && hasKey(r, key), T);
    expect(rec).toMatchObject({
      service: PY,
      method: "remember",
      params: { key, value: { n: 1, s: "ü" } },
      context: { origin: "ts" },
    });
    const sent = await publishedCommand(key);
    expect(sent).toMatchObject({
      exchange: "nuropb-rpc-exchange",
      routingKey: PY,
      mandatory: true,
    });
    await delay(QUIET_MS);
    const id = sent.properties["correlation-id"] as string;
    expect(wireFor(id).filter((p) => p.exchange === "")).toEqual([]);
  });

  it("an encrypted command is decrypted by the Python service", async () => {
    const key = `enc-cmd-${Date.now()}`;
    await client.command(PY, "remember", { key, value: "sealed" }, {}, { encrypted: true });
    const rec = await peer.waitForRecord((r) => r.kind === "command" && hasKey(r, key), T);
    expect(rec.params).toEqual({ key, value: "sealed" });
  });
});

function hasKey(r: PeerRecord, key: string): boolean {
  return (r.params as { key?: unknown } | undefined)?.key === key;
}

describe("events: TypeScript → Python `_handle_event_`", () => {
  it("publishEvent from a TypeScript client reaches the Python hook with topic, event, target and context", async () => {
    const event = { n: 1, text: "grüß 𝄞", nested: { list: [1.5, null, true] } };
    await client.publishEvent("interop.to_py.ping", event, { origin: "ts" }, { target: ["py"] });
    const rec = await peer.waitForRecord(
      (r) => r.kind === "event" && r.topic === "interop.to_py.ping",
      T,
    );
    expect(rec).toMatchObject({ service: PY, event, target: ["py"], context: { origin: "ts" } });
  });

  it("int64 extremes in an event payload reach Python as exact ints", async () => {
    await client.publishEvent("interop.to_py.int64", INT64);
    const rec = await peer.waitForRecord(
      (r) => r.kind === "event" && r.topic === "interop.to_py.int64",
      T,
    );
    expect(rec.event).toEqual(INT64);
  });

  it("an event a TypeScript handler raises (ctx.addEvent) reaches Python without the caller's Authorization", async () => {
    const topic = "interop.to_py.raised";
    await expect(
      client.request(
        "ts_listener",
        "raise_event",
        { topic, event: { from: "ts handler" } },
        { Authorization: GOOD, origin: "ts-caller" },
      ),
    ).resolves.toBe("raised");
    const rec = await peer.waitForRecord((r) => r.kind === "event" && r.topic === topic, T);
    expect(rec.event).toEqual({ from: "ts handler" });
    // The rest of the caller's context travels on; its token does not.
    expect(rec.context).toEqual({ origin: "ts-caller" });
  });
});

describe("events: Python → TypeScript handleEvent", () => {
  it("events a Python handler raises (NuropbSuccess) reach a TypeScript service with the request's trace id and context", async () => {
    const topic = "interop.from_py.emitted";
    const payload = { order: "A-7", total: 12.5, note: "✓" };
    await expect(
      client.request(
        PY,
        "emit_events",
        { topic, payload },
        { origin: "ts-caller" },
        { traceId: "trace-emit-1" },
      ),
    ).resolves.toEqual({ emitted: topic });
    await expect
      .poll(() => listener.instance.events.some((e) => e.topic === topic), { timeout: T })
      .toBe(true);
    expect(listener.instance.events.find((e) => e.topic === topic)).toMatchObject({
      topic,
      event: payload,
      target: ["interop-target"],
      context: { origin: "ts-caller" },
      traceId: "trace-emit-1",
    });
  });
});

describe("one service queue, a TypeScript and a Python instance", () => {
  it("requests are answered by both, each exactly once", async () => {
    const N = 24;
    const before = peer.records.filter((r) => r.kind === "call").length;
    const answers: { lang: string; n: number }[] = [];
    // A few at a time: the broker hands the shared queue's messages round-robin.
    for (let i = 0; i < N; i += 3) {
      const batch = [i, i + 1, i + 2].map((n) =>
        client.request<{ lang: string; n: number }>(SHARED, "whoami", { n }),
      );
      answers.push(...(await Promise.all(batch)));
    }
    expect(answers.map((a) => a.n)).toEqual(Array.from({ length: N }, (_, n) => n));
    const byPython = answers.filter((a) => a.lang === "python").map((a) => a.n);
    const byTs = answers.filter((a) => a.lang === "typescript").map((a) => a.n);
    expect(byPython.length).toBeGreaterThan(0);
    expect(byTs.length).toBeGreaterThan(0);
    // Each was handled once: the handlers ran exactly for the answers each side gave.
    const pythonCalls = async (): Promise<number[]> =>
      peer.records
        .filter((r) => r.kind === "call")
        .slice(before)
        .map((r) => r.n as number)
        .sort((a, b) => a - b);
    await expect.poll(pythonCalls, { timeout: T }).toEqual(byPython.sort((a, b) => a - b));
    await delay(QUIET_MS);
    expect(await pythonCalls()).toEqual(byPython);
    expect([...sharedTs.instance.seen].sort((a, b) => a - b)).toEqual(byTs.sort((a, b) => a - b));
  });
});
