import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  NuropbMessageError,
  buildHeaders,
  decodeFrame,
  encodePayload,
  newId,
  type Delivery,
  type Destination,
  type Frame,
  type Logger,
  type InboundFrame,
  type ResponsePayload,
  type Transport,
} from "@nuropb/protocol";
import {
  CipherSuite,
  createPayloadEncryptor,
  createServiceKeys,
  type CipherSuite as Suite,
  type ServiceKeys,
} from "@nuropb/crypto";
import { createClient, createService, publishToMesh, type RequestContext } from "@nuropb/core";
import { Responder } from "../src/responder.ts";
import { Sealing } from "../src/sealing.ts";
import { createMesh, waitFor } from "./helpers.ts";

class Vault {
  @publishToMesh({ requiresEncryption: true })
  secretEcho(params: { card: string }, ctx: RequestContext): unknown {
    return { secret: params, encrypted: ctx.encrypted };
  }
}

/** A transport whose sent frames are recorded (what went on the wire, by kind). */
function recording(t: Transport): { transport: Transport; sent: Frame[] } {
  const sent: Frame[] = [];
  const send = t.send.bind(t);
  t.send = (to: Destination, frame: Frame) => {
    sent.push(frame);
    return send(to, frame);
  };
  return { transport: t, sent };
}

let keys: ServiceKeys;
beforeAll(() => {
  keys = createServiceKeys({ rsa: true, nacl: true });
});

let mesh: ReturnType<typeof createMesh>;
afterEach(() => mesh.cleanup());

/** A vault service with `suites` enabled, a client with default options; both connected. */
async function pair(serviceSuites: readonly Suite[] | undefined, cipherThreads = 0) {
  mesh = createMesh();
  const svc = recording(mesh.transport());
  const cli = recording(mesh.transport());
  const service = createService({
    transport: svc.transport,
    name: "vault",
    instance: new Vault(),
    keys,
    encryption: {
      cipherThreads,
      ...(serviceSuites === undefined ? {} : { suites: serviceSuites }),
    },
  });
  const client = createClient({ transport: cli.transport, encryption: { cipherThreads } });
  await service.connect();
  await client.connect();
  mesh.defer(() => client.disconnect());
  mesh.defer(() => service.disconnect());
  return { client, requests: cli.sent, responses: svc.sent };
}

describe("x25519-aes-gcm between TypeScript participants", () => {
  for (const cipherThreads of [0, 1]) {
    it(`a sealed call uses the native suite both ways (${cipherThreads} cipher threads)`, async () => {
      const { client, requests, responses } = await pair(undefined, cipherThreads);
      const d = await client.describeService("vault");
      expect(d.native_public_key).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      expect(d.nacl_public_key).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      expect(d.public_key).toMatch(/^-----BEGIN PUBLIC KEY-----\n/); // Python callers still fit
      const r = await client.request("vault", "secretEcho", { card: "4111" });
      expect(r).toEqual({ secret: { card: "4111" }, encrypted: true });
      // Envelope version 3 (first byte 3) needs no nuropb_enc header; the sender key is in the body.
      const request = requests.find((f) => f.headers.encrypted === "yes");
      expect(request?.body[0]).toBe(3);
      expect(request?.headers.nuropb_enc).toBeUndefined();
      expect(request?.headers.nuropb_enc_pk).toBeUndefined();
      expect(Buffer.from(request?.body ?? []).toString("latin1")).not.toContain("4111");
      const response = responses.find((f) => f.headers.encrypted === "yes");
      expect(response?.body[0]).toBe(3);
      expect(response?.headers.nuropb_enc).toBeUndefined();
      expect(Buffer.from(response?.body ?? []).toString("latin1")).not.toContain("4111");
    });
  }

  it("without cipher threads, a sealed request leaves in the caller's turn (no promise hop)", async () => {
    const { client, requests } = await pair(undefined, 0);
    await client.describeService("vault");
    const before = requests.length;
    const call = client.request("vault", "secretEcho", { card: "4111" });
    expect(requests.length).toBe(before + 1); // sealed and handed to the transport already
    expect(requests.at(-1)?.headers.encrypted).toBe("yes");
    const command = client.command("vault", "secretEcho", { card: "1" }, {}, { encrypted: true });
    expect(requests.length).toBe(before + 2);
    expect(await call).toEqual({ secret: { card: "4111" }, encrypted: true });
    await command;
    // With a cipher thread the request waits for it: not sent in the caller's turn.
    await mesh.cleanup();
    const threaded = await pair(undefined, 1);
    await threaded.client.describeService("vault");
    const n = threaded.requests.length;
    const later = threaded.client.request("vault", "secretEcho", { card: "4111" });
    expect(threaded.requests.length).toBe(n);
    expect(await later).toMatchObject({ encrypted: true });
  });

  it("without cipher threads, a sealed response is sealed and sent in the responder's turn", async () => {
    const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} } as unknown as Logger;
    const request = encodePayload({
      tag: "request",
      service: "vault",
      method: "secretEcho",
      params: {},
      correlation_id: "c-1",
      context: {},
      trace_id: "t",
    });
    const announced = createPayloadEncryptor({ keys }).publicKeys.native;
    for (const cipherThreads of [0, 1]) {
      const sealing = new Sealing({ keys, encryption: { cipherThreads } });
      const sealed = createPayloadEncryptor().sealRequest(request.body, {
        nativePublicKey: announced,
      });
      const { replyKey } = await sealing.openRequest({
        body: sealed.body,
        headers: sealed.headers,
      } as unknown as Delivery);
      const send = vi.fn((_to: Destination, _frame: Frame) => Promise.resolve());
      const transport = { capabilities: { maxFrameBytes: 1 << 20 }, send } as unknown as Transport;
      const done = new Responder(transport, sealing, silent).respond(
        "reply-here",
        { correlationId: "c-1", traceId: "t", context: {}, result: 1, error: null },
        replyKey,
      );
      expect(send.mock.calls.length).toBe(cipherThreads === 0 ? 1 : 0);
      await done;
      expect(send).toHaveBeenCalledTimes(1);
      expect(send.mock.calls[0]?.[1].headers.encrypted).toBe("yes");
      expect(send.mock.calls[0]?.[1].body[0]).toBe(3); // x25519-aes-gcm, envelope version 3
      await sealing.close();
    }
  });

  for (const cipherThreads of [0, 1]) {
    it(`a sealed response that does not open fails its call at once, typed (${cipherThreads} cipher threads)`, async () => {
      mesh = createMesh();
      const svcTransport = mesh.transport();
      const send = svcTransport.send.bind(svcTransport);
      // The service's sealed answers arrive with one ciphertext byte flipped.
      svcTransport.send = (to: Destination, frame: Frame) => {
        if (to.kind !== "reply" || frame.headers.encrypted !== "yes") return send(to, frame);
        const body = new Uint8Array(frame.body);
        body[body.length - 1] = (body[body.length - 1] as number) ^ 1;
        return send(to, { ...frame, body });
      };
      const service = createService({
        transport: svcTransport,
        name: "vault",
        instance: new Vault(),
        keys,
        encryption: { cipherThreads },
      });
      const client = createClient({ transport: mesh.transport(), encryption: { cipherThreads } });
      await service.connect();
      await client.connect();
      mesh.defer(() => client.disconnect());
      mesh.defer(() => service.disconnect());
      await client.describeService("vault");
      const call = client.request("vault", "secretEcho", { card: "4111" }, {}, { ttlMs: 60_000 });
      // With a 60 s ttl, failing within the test's time means it failed on arrival.
      const err = await call.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NuropbMessageError);
      expect((err as NuropbMessageError).details).toMatchObject({ reason: "tampered" });
    });
  }

  it("falls back to nacl, then to rsa-fernet for a Python-shaped description", async () => {
    for (const [suites, header] of [
      [["nacl", "rsa-fernet"], "nacl"],
      [["rsa-fernet"], undefined], // announces public_key only, as a Python service does
    ] as const) {
      const { client, requests, responses } = await pair(suites);
      const d = await client.describeService("vault");
      expect(d.native_public_key).toBeUndefined();
      expect(await client.request("vault", "secretEcho", { card: "5500" })).toMatchObject({
        encrypted: true,
      });
      const request = requests.find((f) => f.headers.encrypted === "yes");
      expect(request?.headers.nuropb_enc).toBe(header);
      expect(responses.find((f) => f.headers.encrypted === "yes")?.headers.nuropb_enc).toBe(header);
      await mesh.cleanup();
    }
  });

  it("tampered, truncated and wrong-key native requests get a typed reply and are dead-lettered", async () => {
    mesh = createMesh();
    const service = createService({
      transport: mesh.transport(),
      name: "vault",
      instance: new Vault(),
      keys,
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
    const raw = mesh.transport();
    await raw.connect();
    const address = `nuropb-raw-${newId()}-rq`;
    const replies: InboundFrame[] = [];
    await raw.consumeResponses({ address }, (f) => replies.push(f));
    const body = encodePayload({
      tag: "request",
      service: "vault",
      method: "secretEcho",
      params: { card: "4111" },
      correlation_id: "c-x",
      context: {},
      trace_id: "t",
    }).body;
    const enc = createPayloadEncryptor();
    const announced = createPayloadEncryptor({ keys }).publicKeys.native;
    const sealed = enc.sealRequest(body, { nativePublicKey: announced });
    expect(sealed.replyKey.suite).toBe(CipherSuite.native);
    const tampered = Uint8Array.from(sealed.body);
    tampered[tampered.length - 20] = (tampered[tampered.length - 20] ?? 0) ^ 0x10;
    const other = createPayloadEncryptor({ keys: createServiceKeys({ nacl: true }) });
    const wrongKey = enc.sealRequest(body, { nativePublicKey: other.publicKeys.native });
    const cases = [
      { id: "tampered", body: tampered },
      { id: "truncated", body: sealed.body.slice(0, 40) },
      { id: "wrongkey", body: wrongKey.body },
    ];
    for (const c of cases) {
      await raw.send(
        { kind: "rpc", service: "vault" },
        {
          headers: { ...buildHeaders("request", "t", true), ...sealed.headers },
          body: c.body,
          correlationId: c.id,
          replyTo: address,
          ttlMs: 5000,
        },
      );
    }
    await waitFor(() => replies.length === cases.length);
    for (const r of replies) {
      const p = decodeFrame(r).payload as ResponsePayload;
      expect(p.error?.error).toBe(new NuropbMessageError("x").name);
    }
    await waitFor(() => mesh.hub.deadLetters().length === cases.length);
    // Dead-lettered as they came: encrypted, still the suite's binary envelope.
    expect(mesh.hub.deadLetters().map((d) => [d.frame.headers.encrypted, d.frame.body[0]])).toEqual(
      cases.map(() => ["yes", 3]),
    );
  });
});
