import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  NuropbMessageError,
  buildHeaders,
  decodeFrame,
  encodePayload,
  newId,
  type EventType,
  type InboundFrame,
  type ResponsePayload,
  type Transport,
} from "@nuropb/protocol";
import { createClient, createService } from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

// maxInboundBodyBytes: a body over the limit is refused before it is decrypted or parsed.

const LIMIT = 2_000;
const enc = new TextEncoder();

let mesh: ReturnType<typeof createMesh>;
beforeEach(() => {
  mesh = createMesh();
});
afterEach(async () => {
  await mesh.cleanup();
});

class Store {
  runs = 0;
  readonly events: EventType[] = [];
  echo(params: { blob?: string }): number {
    this.runs++;
    return params.blob?.length ?? 0;
  }
  remember(): void {
    this.runs++;
  }
  big(params: { n: number }): string {
    return "x".repeat(params.n);
  }
  handleEvent(event: EventType): void {
    this.events.push(event);
  }
}

/** A connected service "s" reading at most LIMIT bytes, bound to events "big.#". */
async function serve(): Promise<Store> {
  const store = new Store();
  const service = createService({
    transport: mesh.transport(),
    name: "s",
    instance: store,
    eventBindings: ["big.#"],
    maxInboundBodyBytes: LIMIT,
  });
  await service.connect();
  mesh.defer(() => service.disconnect());
  return store;
}

async function connectedClient(maxInboundBodyBytes?: number) {
  const client = createClient({
    transport: mesh.transport(),
    defaultTtlMs: 30_000, // a refusal must come back long before this
    ...(maxInboundBodyBytes === undefined ? {} : { maxInboundBodyBytes }),
  });
  await client.connect();
  mesh.defer(() => client.disconnect());
  return client;
}

/** Sends hand-made request bodies to "s" and collects the responses. */
async function rawPeer() {
  const t = mesh.transport();
  await t.connect();
  const address = `rq-raw-${newId()}`;
  const replies: InboundFrame[] = [];
  await t.consumeResponses({ address }, (f) => void replies.push(f));
  return {
    replies,
    /** `body`: the bytes, or made from the message's correlation id. */
    async send(
      body: Uint8Array | ((correlationId: string) => Uint8Array),
      encrypted = false,
    ): Promise<string> {
      const correlationId = newId();
      await t.send(
        { kind: "rpc", service: "s" },
        {
          headers: buildHeaders("request", "trace-raw", encrypted),
          body: typeof body === "function" ? body(correlationId) : body,
          correlationId,
          replyTo: address,
          ttlMs: 5_000,
        },
      );
      return correlationId;
    },
  };
}

/** A request body of exactly `bytes` bytes for Store.echo, padded in its params. */
const requestOfSize =
  (bytes: number) =>
  (correlationId: string): Uint8Array => {
    const make = (pad: string) =>
      enc.encode(
        JSON.stringify({
          tag: "request",
          service: "s",
          method: "echo",
          params: { blob: pad },
          correlation_id: correlationId,
          context: {},
          trace_id: "trace-raw",
        }),
      );
    const body = make("x".repeat(bytes - make("").byteLength));
    expect(body.byteLength).toBe(bytes);
    return body;
  };

/** A raw service "raw" answering every request with `body` as the response's bytes. */
async function rawService(t: Transport, body: (replyTo: string, id: string) => Uint8Array) {
  await t.connect();
  await t.consumeService(
    { service: "raw", rpcBindings: [], eventBindings: [], prefetch: 0 },
    async (d) => {
      await d.ack();
      await t.send(
        { kind: "reply", address: d.replyTo as string },
        {
          headers: buildHeaders("response", "t"),
          body: body(d.replyTo as string, d.correlationId),
          correlationId: d.correlationId,
        },
      );
    },
  );
}

describe("maxInboundBodyBytes on a service", () => {
  it("dead-letters an oversized request once, answers it with the size and limit, keeps serving", async () => {
    const store = await serve();
    const client = await connectedClient();
    const err = await client.request("s", "echo", { blob: "x".repeat(LIMIT) }).catch((e) => e);
    expect(err).toBeInstanceOf(NuropbMessageError);
    expect((err as NuropbMessageError).description).toMatch(
      new RegExp(`^the request body of \\d+ bytes exceeds maxInboundBodyBytes \\(${LIMIT}\\)$`),
    );
    expect(store.runs).toBe(0);
    expect(mesh.hub.deadLetters().map((d) => [d.queue, d.reason])).toEqual([
      ["nuropb-s-sq", "rejected"],
    ]);
    expect(await client.request("s", "echo", { blob: "ok" })).toBe(2);
    expect(mesh.hub.deadLetters()).toHaveLength(1);
  });

  it("never parses nor decrypts an oversized body", async () => {
    await serve();
    const peer = await rawPeer();
    const junk = enc.encode("{not json".padEnd(LIMIT + 1, "!"));
    const ids = [await peer.send(junk), await peer.send(junk, true)];
    await waitFor(() => peer.replies.length === 2, 2000, "two answers");
    for (const r of peer.replies) {
      const reply = decodeFrame(r).payload as ResponsePayload;
      // Parsing or opening it would have said why it is not JSON or does not open.
      expect(reply.error).toEqual({
        error: "NuropbMessageError",
        description: `the request body of ${LIMIT + 1} bytes exceeds maxInboundBodyBytes (${LIMIT})`,
        details: { bytes: LIMIT + 1, maxInboundBodyBytes: LIMIT },
      });
      expect(reply.context).toEqual({});
      expect(reply.trace_id).toBe("trace-raw");
    }
    expect(peer.replies.map((r) => r.correlationId).sort()).toEqual(ids.sort());
    expect(mesh.hub.deadLetters()).toHaveLength(2);
  });

  it("serves a request of exactly the limit", async () => {
    const store = await serve();
    const peer = await rawPeer();
    await peer.send(requestOfSize(LIMIT));
    await waitFor(() => peer.replies.length === 1, 2000, "the answer");
    const reply = decodeFrame(peer.replies[0] as InboundFrame).payload as ResponsePayload;
    expect(reply.error).toBeNull();
    expect(store.runs).toBe(1);
    await peer.send(requestOfSize(LIMIT + 1));
    await waitFor(() => peer.replies.length === 2, 2000, "the refusal");
    expect(store.runs).toBe(1);
  });

  it("dead-letters an oversized command and event without running a handler", async () => {
    const store = await serve();
    const client = await connectedClient();
    await client.command("s", "remember", { blob: "x".repeat(LIMIT) });
    await client.publishEvent("big.one", { blob: "x".repeat(LIMIT) });
    await waitFor(() => mesh.hub.deadLetters().length === 2, 2000, "two dead letters");
    expect(store.runs).toBe(0);
    expect(store.events).toHaveLength(0);
    // Small ones still go through.
    await client.command("s", "remember", {});
    await client.publishEvent("big.one", {});
    await waitFor(() => store.runs === 1 && store.events.length === 1, 2000, "both handled");
    expect(mesh.hub.deadLetters()).toHaveLength(2);
  });
});

describe("maxInboundBodyBytes on a client", () => {
  it("fails a request whose response is too large, at once, with a typed error", async () => {
    await serve();
    const client = await connectedClient(LIMIT);
    const err = await client.request("s", "big", { n: LIMIT }).catch((e) => e);
    expect(err).toBeInstanceOf(NuropbMessageError);
    expect((err as NuropbMessageError).description).toMatch(
      new RegExp(`^the response body of \\d+ bytes exceeds maxInboundBodyBytes \\(${LIMIT}\\)$`),
    );
    expect(client.pendingRequests).toBe(0);
    expect(await client.request("s", "big", { n: 10 })).toBe("x".repeat(10));
  });

  it("never parses an oversized response; one of exactly the limit is read", async () => {
    let size = LIMIT + 1;
    await rawService(mesh.transport(), (replyTo, id) => {
      const make = (pad: string) =>
        encodePayload({
          tag: "response",
          result: pad,
          error: null,
          correlation_id: id,
          trace_id: "t",
          context: {},
          warning: null,
          reply_to: replyTo,
        }).body;
      if (size > LIMIT) return enc.encode("{not json".padEnd(size, "!"));
      return make("y".repeat(size - make("").byteLength));
    });
    const client = await connectedClient(LIMIT);
    const err = await client.request("raw", "x").catch((e) => e);
    expect(err).toBeInstanceOf(NuropbMessageError);
    expect((err as NuropbMessageError).description).toBe(
      `the response body of ${LIMIT + 1} bytes exceeds maxInboundBodyBytes (${LIMIT})`,
    );
    size = LIMIT;
    const atLimit = await client.request<string>("raw", "x");
    expect(atLimit).toMatch(/^y+$/);
  });

  it("takes 4 MiB by default and refuses bad values with TypeError", () => {
    const t = mesh.transport();
    expect(() => createClient({ transport: t })).not.toThrow();
    for (const bad of [0, -1, 1.5, Number.NaN, Infinity, "1024", null]) {
      expect(() => createClient({ transport: t, maxInboundBodyBytes: bad as number })).toThrow(
        /options\.maxInboundBodyBytes must be a positive integer of bytes/,
      );
      expect(() =>
        createService({
          transport: t,
          name: "s",
          instance: new Store(),
          maxInboundBodyBytes: bad as number,
        }),
      ).toThrow(TypeError);
    }
  });
});
