import { createService } from "@nuropb/core";
import type { MeshService } from "@nuropb/core";
import { NuropbValidationError } from "@nuropb/protocol";
import type { EventType, Transport } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { createCollector, delay } from "@nuropb/transport-testkit";
import type { Collector } from "@nuropb/transport-testkit";
import amqp from "amqplib";
import type { ChannelModel, ConsumeMessage } from "amqplib";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createTestMesh, rabbitEnv } from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";
import { startAmqpSniffer } from "../src/amqp-sniffer.ts";
import type { AmqpSniffer } from "../src/amqp-sniffer.ts";
import {
  SAMPLE_COMMAND,
  SAMPLE_EVENT,
  SAMPLE_REQUEST,
  SAMPLE_REQUEST_VOID_TRACE,
  SAMPLE_RESPONSE,
} from "../src/amqp-wire-samples.ts";
import type { WireSample } from "../src/amqp-wire-samples.ts";

// A TypeScript service named like the Python peer of WIRE-SAMPLES.md receives the recorded Python
// messages verbatim (published by an independent amqplib connection, exactly as pika sent them) and
// must answer as the Python service did. Everything it publishes passes through a byte-level sniffer.

const T = 10_000;
/** How long we watch to show that nothing more arrives (a second response, a second dead letter). */
const QUIET_MS = 400;
const CLIENT_RQ = SAMPLE_RESPONSE.routingKey;

class PyPeer {
  readonly remembered: unknown[] = [];
  readonly events: EventType[] = [];
  echo(params: Record<string, unknown>): unknown {
    return params;
  }
  fail_validation(params: { field: string }): never {
    throw new NuropbValidationError(`invalid field: ${params.field}`);
  }
  remember(params: { key: string; value: unknown }): void {
    this.remembered.push(params);
  }
  handleEvent(event: EventType): void {
    this.events.push(event);
  }
}

let mesh: TestMesh;
let sniffer: AmqpSniffer;
let transport: Transport;
let service: MeshService<PyPeer>;
let peer: PyPeer;
/** The "Python side": an independent connection that publishes and reads raw AMQP. */
let python: ChannelModel;
let responses: Collector<ConsumeMessage>;
let deadLetters: Collector<ConsumeMessage>;

beforeEach(async () => {
  mesh = await createTestMesh("interop");
  sniffer = await startAmqpSniffer(Number(new URL(rabbitEnv().amqpUrl).port));
  transport = createAmqpTransport({
    url: `amqp://guest:guest@127.0.0.1:${sniffer.port}/${mesh.vhost}`,
  });
  peer = new PyPeer();
  service = createService({
    transport,
    name: "py-peer",
    instance: peer,
    eventBindings: ["interop.capture.*"],
  });
  await service.connect();

  python = await amqp.connect(mesh.url);
  const ch = await python.createChannel();
  // The Python client's response queue, declared as Python declares it.
  await ch.assertQueue(CLIENT_RQ, { durable: false, exclusive: false, autoDelete: true });
  responses = createCollector<ConsumeMessage>("responses at the Python client");
  await ch.consume(CLIENT_RQ, (m) => m && responses.push(m), { noAck: true, exclusive: true });
  // Our own dead-letter watcher: the DL exchange is fanout, so it sees every dead letter.
  const { queue } = await ch.assertQueue("", { exclusive: true });
  await ch.bindQueue(queue, "nuropb-dl-exchange", "");
  deadLetters = createCollector<ConsumeMessage>("dead letters");
  await ch.consume(queue, (m) => m && deadLetters.push(m), { noAck: true });
});

afterEach(async () => {
  await service.disconnect();
  await transport.close();
  await python.close();
  await sniffer.close();
  await mesh.teardown();
});

/** Publishes a message exactly as pika would: only the given properties, nothing added. */
async function publishRaw(
  exchange: string,
  routingKey: string,
  body: string,
  properties: amqp.Options.Publish,
): Promise<void> {
  const ch = await python.createConfirmChannel();
  await new Promise<void>((resolve, reject) =>
    ch.publish(exchange, routingKey, Buffer.from(body), properties, (err: unknown) =>
      err ? reject(err as Error) : resolve(),
    ),
  );
  await ch.close();
}

const inject = (s: WireSample, overrides: Partial<amqp.Options.Publish> = {}): Promise<void> =>
  publishRaw(s.exchange, s.routingKey, s.body, {
    contentType: s.properties.content_type,
    headers: s.properties.headers,
    correlationId: s.properties.correlation_id,
    replyTo: s.properties.reply_to,
    ...(s.properties.expiration !== undefined ? { expiration: s.properties.expiration } : {}),
    ...overrides,
  });

/** A Python-shaped request (json.dumps separators) for `method` with `params`. */
function pyRequest(
  correlationId: string,
  method: string,
  params: Record<string, unknown>,
  traceId: string | null,
): WireSample {
  const body =
    `{"tag": "request", "service": "py-peer", "method": "${method}", "params": ${JSON.stringify(params).replace(/([,:])/g, "$1 ")}, ` +
    `"correlation_id": "${correlationId}", "context": {"origin": "capture_wire", "Authorization": "Bearer good"}, "trace_id": ${traceId === null ? "null" : `"${traceId}"`}}`;
  return {
    ...SAMPLE_REQUEST,
    properties: {
      ...SAMPLE_REQUEST.properties,
      correlation_id: correlationId,
      headers: { ...SAMPLE_REQUEST.properties.headers, trace_id: traceId },
    },
    body,
  };
}

/** The one response for `correlationId`, after checking no second one follows. */
async function onlyResponse(correlationId: string): Promise<ConsumeMessage> {
  const first = await responses.waitForItem((m) => m.properties.correlationId === correlationId, T);
  await delay(QUIET_MS);
  expect(responses.items.filter((m) => m.properties.correlationId === correlationId)).toHaveLength(
    1,
  );
  return first;
}

const bodyOf = (m: ConsumeMessage): Record<string, unknown> =>
  JSON.parse(m.content.toString("utf8")) as Record<string, unknown>;

describe("a TypeScript service answers recorded Python messages as the Python service did", () => {
  it("request (echo): one response, with the properties and body of the recorded Python response", async () => {
    await inject(SAMPLE_REQUEST);
    const r = await onlyResponse(SAMPLE_REQUEST.properties.correlation_id);
    expect(r.fields.exchange).toBe("");
    expect(r.fields.routingKey).toBe(CLIENT_RQ);
    expect(r.properties.contentType).toBe("application/json");
    expect(r.properties.correlationId).toBe(SAMPLE_RESPONSE.properties.correlation_id);
    expect(r.properties.replyTo).toBe("");
    expect(r.properties.expiration).toBeUndefined();
    expect(r.properties.deliveryMode).toBeUndefined();
    const { nuropb_version: version, ...headers } = r.properties.headers ?? {};
    const { nuropb_version: _pyVersion, ...expected } = SAMPLE_RESPONSE.properties.headers;
    expect(headers).toStrictEqual(expected);
    expect(typeof version).toBe("string");
    expect(bodyOf(r)).toStrictEqual(JSON.parse(SAMPLE_RESPONSE.body));

    // On the wire: default exchange, not mandatory, exactly Python's property set, all headers `S`.
    const wire = sniffer.publishes.filter(
      (p) => p.properties["correlation-id"] === SAMPLE_REQUEST.properties.correlation_id,
    );
    expect(wire).toHaveLength(1);
    expect(wire[0]).toMatchObject({ exchange: "", routingKey: CLIENT_RQ, mandatory: false });
    expect(wire[0]?.present).toEqual(["content-type", "headers", "correlation-id", "reply-to"]);
    expect(wire[0]?.headers?.map((f) => `${f.name}:${f.tag}`)).toEqual([
      "nuropb_protocol:S",
      "nuropb_version:S",
      "nuropb_type:S",
      "trace_id:S",
      "encrypted:S",
    ]);
  });

  it("a failing request gets one error response (Python sends two), and is dead-lettered once", async () => {
    const s = pyRequest(
      "796f95f0e8664b84ab360c0c86feb65a",
      "fail_validation",
      { field: "zip_code" },
      "trace-error",
    );
    await inject(s);
    const r = await onlyResponse("796f95f0e8664b84ab360c0c86feb65a");
    expect(bodyOf(r)).toMatchObject({
      tag: "response",
      result: null,
      error: { error: "NuropbValidationError", description: "invalid field: zip_code" },
      correlation_id: "796f95f0e8664b84ab360c0c86feb65a",
      trace_id: "trace-error",
      context: { origin: "capture_wire", Authorization: "Bearer good" },
      warning: null,
      reply_to: CLIENT_RQ,
    });
    await deadLetters.waitForCount(1, T);
    await delay(QUIET_MS);
    expect(deadLetters.items).toHaveLength(1);
    expect(deadLetters.items[0]?.properties.correlationId).toBe("796f95f0e8664b84ab360c0c86feb65a");
  });

  it("an unknown method gets NuropbHandlingError 'Unknown method …'", async () => {
    await inject(pyRequest("0123456789abcdef0123456789abcdef", "no_such_method", {}, "trace-x"));
    const r = await onlyResponse("0123456789abcdef0123456789abcdef");
    expect(bodyOf(r).error).toStrictEqual({
      error: "NuropbHandlingError",
      description: "Unknown method no_such_method",
    });
  });

  it("a void trace_id stays void: header V and body null in the response", async () => {
    await inject(SAMPLE_REQUEST_VOID_TRACE);
    const id = SAMPLE_REQUEST_VOID_TRACE.properties.correlation_id;
    const r = await onlyResponse(id);
    expect(r.properties.headers?.trace_id).toBeNull();
    expect(bodyOf(r).trace_id).toBeNull();
    const wire = sniffer.publishes.find(
      (p) => p.properties["correlation-id"] === id && p.exchange === "",
    );
    expect(wire?.headers?.find((f) => f.name === "trace_id")?.tag).toBe("V");
  });

  it("command (remember): runs, never answered", async () => {
    await inject(SAMPLE_COMMAND);
    await expect.poll(() => peer.remembered, { timeout: T }).toEqual([{ key: "k1", value: "v1" }]);
    await delay(QUIET_MS);
    expect(responses.items).toHaveLength(0);
    expect(deadLetters.items).toHaveLength(0);
  });

  it("event published by a Python client reaches handleEvent with topic, payload, target and context", async () => {
    await inject(SAMPLE_EVENT);
    await expect.poll(() => peer.events.length, { timeout: T }).toBe(1);
    expect(peer.events[0]).toMatchObject({
      topic: "interop.capture.client",
      event: { kind: "ping", n: 7 },
      target: null,
      context: { origin: "capture_wire", Authorization: "Bearer good" },
      traceId: "trace-event",
    });
    await delay(QUIET_MS);
    expect(responses.items).toHaveLength(0);
  });
});

describe("poison messages injected raw", () => {
  const good = SAMPLE_REQUEST;
  const goodHeaders = good.properties.headers;
  const poison: {
    label: string;
    correlationId: string;
    body: string;
    headers: Record<string, unknown> | undefined;
  }[] = [
    {
      label: "bad JSON",
      correlationId: "poison-json",
      body: '{"tag": "request", "service": ',
      headers: goodHeaders,
    },
    {
      label: "protocol 0.0.9",
      correlationId: "poison-protocol",
      body: good.body.replaceAll(good.properties.correlation_id, "poison-protocol"),
      headers: { ...goodHeaders, nuropb_protocol: "0.0.9" },
    },
    {
      label: "no headers table",
      correlationId: "poison-noheaders",
      body: good.body.replaceAll(good.properties.correlation_id, "poison-noheaders"),
      headers: undefined,
    },
    {
      label: "unknown nuropb_type",
      correlationId: "poison-type",
      body: good.body
        .replaceAll(good.properties.correlation_id, "poison-type")
        .replace('"tag": "request"', '"tag": "foo"'),
      headers: { ...goodHeaders, nuropb_type: "foo" },
    },
    {
      label: "encrypted: yes over garbage",
      correlationId: "poison-encrypted",
      body: "bm90LWEta2V5.Z0FBQUFBbm90LWEtdG9rZW4=",
      headers: { ...goodHeaders, encrypted: "yes" },
    },
    {
      label: "body that is a JSON list",
      correlationId: "poison-list",
      body: "[1, 2, 3]",
      headers: goodHeaders,
    },
  ];

  it("each is dead-lettered exactly once and answered with NuropbMessageError; the service keeps answering", async () => {
    for (const p of poison) {
      await publishRaw("nuropb-rpc-exchange", "py-peer", p.body, {
        contentType: "application/json",
        correlationId: p.correlationId,
        replyTo: CLIENT_RQ,
        expiration: "3600000",
        ...(p.headers !== undefined ? { headers: p.headers } : {}),
      });
    }
    // Interleaved with normal traffic: the service still answers.
    await inject(good);
    await responses.waitForItem(
      (m) => m.properties.correlationId === good.properties.correlation_id,
      T,
    );

    await deadLetters.waitForCount(poison.length, T);
    for (const p of poison) {
      const r = await responses.waitForItem(
        (m) => m.properties.correlationId === p.correlationId,
        T,
      );
      const body = bodyOf(r);
      expect(body.tag, p.label).toBe("response");
      expect((body.error as { error?: string } | null)?.error, p.label).toBe("NuropbMessageError");
      expect(body.result, p.label).toBeNull();
    }
    await delay(QUIET_MS);
    for (const p of poison) {
      const dead = deadLetters.items.filter((m) => m.properties.correlationId === p.correlationId);
      expect(dead, `dead letters of "${p.label}"`).toHaveLength(1);
      const death = (
        dead[0]?.properties.headers?.["x-death"] as
          { reason?: string; queue?: string }[] | undefined
      )?.[0];
      expect(death, p.label).toMatchObject({ reason: "rejected", queue: "nuropb-py-peer-sq" });
      expect(
        responses.items.filter((m) => m.properties.correlationId === p.correlationId),
        p.label,
      ).toHaveLength(1);
    }
    expect(deadLetters.items).toHaveLength(poison.length);

    // And afterwards, a normal request is answered as before.
    await inject(pyRequest("after-poison", "echo", { ok: true }, "trace-after"));
    const after = await onlyResponse("after-poison");
    expect(bodyOf(after)).toMatchObject({ result: { ok: true }, error: null });
  });
});
