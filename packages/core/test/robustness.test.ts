import { createPayloadEncryptor, createServiceKeys } from "@nuropb/crypto";
import { createClient, createService, type RequestContext } from "@nuropb/core";
import {
  NuropbHandlingError,
  NuropbMessageError,
  NuropbValidationError,
  buildHeaders,
  decodeFrame,
  newId,
  type InboundFrame,
  type ResponsePayload,
} from "@nuropb/protocol";
import { createMemoryTransport } from "@nuropb/transport-memory";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createMesh, waitFor } from "./helpers.ts";

// Faults a peer or a handler can cause that must neither crash the process, nor lose a message,
// nor leave the caller waiting for a timeout.

let mesh: ReturnType<typeof createMesh>;
beforeEach(() => {
  mesh = createMesh();
});
afterEach(async () => {
  await mesh.cleanup();
});

/** A connected service named `name` on the mesh, disconnected after the test. */
async function serve(
  instance: object,
  extra: Partial<Parameters<typeof createService>[0]> = {},
  name = "s",
): Promise<ReturnType<typeof createService>> {
  const service = createService({ transport: mesh.transport(), name, instance, ...extra });
  await service.connect();
  mesh.defer(() => service.disconnect());
  return service;
}

/** A connected client, disconnected after the test. */
async function connectedClient(defaultTtlMs?: number): Promise<ReturnType<typeof createClient>> {
  const client = createClient({
    transport: mesh.transport(),
    ...(defaultTtlMs === undefined ? {} : { defaultTtlMs }),
  });
  await client.connect();
  mesh.defer(() => client.disconnect());
  return client;
}

/** A raw participant (no core) that sends hand-made requests and collects what comes back. */
async function rawPeer(): Promise<{
  send: (body: string, headers?: Record<string, string | null>, raw?: Uint8Array) => string;
  replies: InboundFrame[];
}> {
  const t = mesh.transport();
  await t.connect();
  const address = `rq-raw-${newId()}`;
  const replies: InboundFrame[] = [];
  await t.consumeResponses({ address }, (f) => void replies.push(f));
  return {
    replies,
    send(body, headers = {}, raw) {
      const correlationId = (JSON.parse(body) as { correlation_id: string }).correlation_id;
      void t.send(
        { kind: "rpc", service: "s" },
        {
          headers: { ...buildHeaders("request", "t"), ...headers },
          body: raw ?? new TextEncoder().encode(body),
          correlationId,
          replyTo: address,
          ttlMs: 5_000,
        },
      );
      return correlationId;
    },
  };
}

describe("core survives what peers and handlers do wrong", () => {
  it("a request nested deeper than a body may be is refused unread: dead-lettered once, answered", async () => {
    await serve({ ping: () => "pong" });
    const peer = await rawPeer();
    let context: Record<string, unknown> = {};
    for (let i = 0; i < 70; i++) context = { a: context };
    const correlationId = newId();
    peer.send(
      JSON.stringify({
        tag: "request",
        service: "s",
        method: "ping",
        params: {},
        correlation_id: correlationId,
        context,
        trace_id: "t",
      }),
    );
    await waitFor(() => peer.replies.length === 1, 2_000, "the error response");
    const reply = decodeFrame(peer.replies[0] as InboundFrame);
    if (reply.type !== "response") throw new Error(reply.type);
    expect(reply.correlationId).toBe(correlationId);
    expect(reply.payload.error?.error).toBe("NuropbMessageError");
    expect(reply.payload.error?.description).toMatch(/deeper than 64 levels/);
    expect(reply.payload.context).toEqual({});
    expect(mesh.hub.deadLetters()).toHaveLength(1);
  });

  it("a result larger than the transport carries becomes an error response, not a timeout", async () => {
    await serve(
      { big: () => "x".repeat(20_000) },
      { transport: createMemoryTransport({ hub: mesh.hub, maxFrameBytes: 10_000 }) },
    );
    const client = await connectedClient(30_000);
    const err = await client.request("s", "big").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbMessageError);
    expect((err as Error).message).toMatch(/exceeds the transport's maxFrameBytes \(10000\)/);
    expect(mesh.hub.deadLetters()).toHaveLength(0);
  });

  it("disconnect() lets a draining handler still call other services and publish", async () => {
    await serve({ hi: () => "hi" }, {}, "other");
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const service = createService({
      transport: mesh.transport(),
      name: "s",
      instance: {
        async slow(_p: unknown, ctx: RequestContext) {
          started();
          await new Promise((r) => setTimeout(r, 50));
          const answer = await ctx.request<string>("other", "hi");
          await ctx.publishEvent("s.done", { answer });
          await ctx.command("other", "hi");
          return answer;
        },
      },
    });
    await service.connect();
    const client = await connectedClient();
    const call = client.request("s", "slow");
    await running;
    await service.disconnect();
    expect(await call).toBe("hi");
    expect(mesh.hub.deadLetters()).toHaveLength(0);
    // Once drained, the service refuses new calls.
    await expect(service.request("other", "hi")).rejects.toThrow(/disconnected/);
  });

  it("an abort while the request is being sealed stops it before it is sent", async () => {
    let runs = 0;
    await serve({ ping: () => ++runs }, { keys: createServiceKeys({ nacl: true }) });
    const client = await connectedClient();
    const abort = new AbortController();
    // The first encrypted call waits for the service's description: abort during that wait.
    const call = client.request("s", "ping", {}, {}, { encrypted: true, signal: abort.signal });
    abort.abort(new Error("user gave up"));
    await expect(call).rejects.toThrow("user gave up");
    expect(await client.request("s", "ping", {}, {}, { encrypted: true })).toBe(1);
    expect(client.pendingRequests).toBe(0);
  });

  it("an abort while a client middleware runs stops the request before it is sent", async () => {
    let runs = 0;
    await serve({ ping: () => ++runs }, { keys: createServiceKeys({ nacl: true }) });
    let abort: AbortController | undefined;
    const client = createClient({
      transport: mesh.transport(),
      // Aborts the call's signal (when it has one) while it waits, then lets it go on.
      middleware: [
        async (_call, next) => {
          abort?.abort(new Error("user gave up"));
          await new Promise((r) => setTimeout(r, 5));
          return next();
        },
      ],
    });
    await client.connect();
    mesh.defer(() => client.disconnect());
    // Plaintext, and encrypted once the service's description is cached (sealed in this turn).
    expect(await client.request("s", "ping", {}, {}, { encrypted: true })).toBe(1);
    for (const encrypted of [false, true]) {
      abort = new AbortController();
      const call = client.request("s", "ping", {}, {}, { encrypted, signal: abort.signal });
      await expect(call).rejects.toThrow("user gave up");
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(runs).toBe(1);
    expect(client.pendingRequests).toBe(0);
  });

  it("an encrypted request that decrypts but does not decode is refused in ciphertext", async () => {
    const keys = createServiceKeys({ rsa: true });
    const service = await serve({ ping: () => 1 }, { keys });
    const peer = await rawPeer();
    const sender = createPayloadEncryptor({ suites: ["rsa-fernet"] });
    const correlationId = newId();
    // No `params`: the body is not a valid request once opened.
    const body = JSON.stringify({
      tag: "request",
      service: "s",
      method: "ping",
      correlation_id: correlationId,
      context: {},
      trace_id: "t",
    });
    const sealed = sender.sealRequest(new TextEncoder().encode(body), {
      rsaPublicKeyPem: service.describe().public_key,
    });
    peer.send(body, { ...sealed.headers, encrypted: "yes" }, sealed.body);
    await waitFor(() => peer.replies.length === 1, 2_000, "the error response");
    const reply = peer.replies[0] as InboundFrame;
    expect(reply.headers.encrypted).toBe("yes");
    const opened = sender.openResponse(reply.body, reply.headers, sealed.replyKey);
    const payload = JSON.parse(new TextDecoder().decode(opened)) as ResponsePayload;
    // A sealed answer keeps its whole body, the correlation id binding it to its call.
    expect(payload.correlation_id).toBe(correlationId);
    expect(reply.correlationId).toBe(correlationId);
    expect(payload.error?.error).toBe("NuropbMessageError");
    expect(mesh.hub.deadLetters()).toHaveLength(1);
  });

  it("bad arguments to the call methods throw at once with what was wrong", async () => {
    await serve({
      ping: () => 1,
      emit(_p: unknown, ctx: RequestContext) {
        ctx.addEvent({ topic: "a.*", event: {} });
      },
      target(_p: unknown, ctx: RequestContext) {
        ctx.addEvent({ topic: "a.b", event: {}, target: "x" as never });
      },
    });
    const client = await connectedClient();
    await expect(client.requiresEncryption("s", "toString")).rejects.toThrow(NuropbHandlingError);
    await expect(client.command("s", "ping", {}, {}, { traceId: 5 as never })).rejects.toThrow(
      /options.traceId must be a string/,
    );
    await expect(client.publishEvent("a.b", {}, {}, null as never)).rejects.toThrow(
      /options must be an object/,
    );
    await expect(client.request("s", "ping", {}, {}, { signal: {} as never })).rejects.toThrow(
      /options.signal must be an AbortSignal/,
    );
    await expect(
      client.request("s", "ping", {}, {}, { encrypted: "yes" as never }),
    ).rejects.toThrow(/options.encrypted must be a boolean/);
    await expect(client.request("s", "emit")).rejects.toThrow(NuropbValidationError);
    await expect(client.request("s", "emit")).rejects.toThrow(/without wildcards/);
    await expect(client.request("s", "target")).rejects.toThrow(/target must be an array/);
  });
});
