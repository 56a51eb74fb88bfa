import amqp from "amqplib";
import { createClient, createService, publishToMesh, type RequestContext } from "@nuropb/core";
import {
  CipherSuite,
  createPayloadEncryptor,
  createServiceKeys,
  type ServiceKeys,
} from "@nuropb/crypto";
import {
  buildHeaders,
  decodeFrame,
  encodePayload,
  newId,
  type Destination,
  type Frame,
  type InboundFrame,
  type ResponsePayload,
  type Transport,
} from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { waitFor } from "@nuropb/transport-testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestMesh, type TestMesh } from "../src/amqp-helpers.ts";

// The x25519-aes-gcm suite end to end over RabbitMQ: two TypeScript participants pick it from
// describe, a Python-shaped description falls back to rsa-fernet, and damaged ciphertext is
// answered with a typed error and dead-lettered on the mesh's dead-letter queue.
class Vault {
  @publishToMesh({ requiresEncryption: true })
  secretEcho(params: { card: string }, ctx: RequestContext): unknown {
    return { secret: params, encrypted: ctx.encrypted };
  }
}

const T = 20_000;
let mesh: TestMesh;
let keys: ServiceKeys;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  mesh = await createTestMesh("native-crypto");
  keys = createServiceKeys({ rsa: true, nacl: true });
}, T);
afterAll(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined);
  await mesh.teardown();
}, T);

/** An AMQP transport whose sent frames are recorded. */
function recordingTransport(): { transport: Transport; sent: Frame[] } {
  const transport = createAmqpTransport({ url: mesh.url });
  closers.push(() => transport.close());
  const sent: Frame[] = [];
  const send = transport.send.bind(transport);
  transport.send = (to: Destination, frame: Frame) => {
    sent.push(frame);
    return send(to, frame);
  };
  return { transport, sent };
}

async function startVault(name: string, suites?: readonly CipherSuite[]) {
  const svc = recordingTransport();
  const service = createService({
    transport: svc.transport,
    name,
    instance: new Vault(),
    keys,
    ...(suites === undefined ? {} : { encryption: { suites } }),
  });
  await service.connect();
  closers.push(() => service.disconnect());
  return { responses: svc.sent };
}

async function startClient() {
  const cli = recordingTransport();
  const client = createClient({ transport: cli.transport });
  await client.connect();
  closers.push(() => client.disconnect());
  return { client, requests: cli.sent };
}

describe("x25519-aes-gcm over RabbitMQ", () => {
  it(
    "TypeScript participants seal with it both ways; a Python-shaped service gets rsa-fernet",
    async () => {
      const native = `vault-${newId()}`;
      const pythonShaped = `vault-py-${newId()}`;
      const nativeService = await startVault(native);
      const pythonService = await startVault(pythonShaped, ["rsa-fernet"]);
      const { client, requests } = await startClient();

      const d = await client.describeService(native);
      expect(d.native_public_key).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          client.request(native, "secretEcho", { card: `41${String(i)}` }),
        ),
      );
      results.forEach((r, i) =>
        expect(r).toEqual({ secret: { card: `41${String(i)}` }, encrypted: true }),
      );
      // Envelope version 3 (first byte 3): no nuropb_enc header, one header less per message.
      const sealed = requests.filter((f) => f.headers.encrypted === "yes");
      expect(sealed).toHaveLength(20);
      expect(new Set(sealed.map((f) => `${String(f.headers.nuropb_enc)} ${f.body[0]}`))).toEqual(
        new Set(["undefined 3"]),
      );
      const replies = nativeService.responses.filter((f) => f.headers.encrypted === "yes");
      expect(replies).toHaveLength(20);
      expect(new Set(replies.map((f) => `${String(f.headers.nuropb_enc)} ${f.body[0]}`))).toEqual(
        new Set(["undefined 3"]),
      );
      // A large body goes as version 3 too (ChaCha20-Poly1305 at every size), both ways.
      const card = "4".repeat(1500);
      expect(await client.request(native, "secretEcho", { card })).toEqual({
        secret: { card },
        encrypted: true,
      });
      const large = requests.filter((f) => f.headers.encrypted === "yes").at(-1);
      expect([large?.headers.nuropb_enc, large?.body[0]]).toEqual([undefined, 3]);
      const largeReply = nativeService.responses.at(-1);
      expect([largeReply?.headers.nuropb_enc, largeReply?.body[0]]).toEqual([undefined, 3]);

      const py = await client.describeService(pythonShaped);
      expect(py.native_public_key).toBeUndefined();
      expect(py.nacl_public_key).toBeNull();
      expect(await client.request(pythonShaped, "secretEcho", { card: "5500" })).toEqual({
        secret: { card: "5500" },
        encrypted: true,
      });
      const last = requests.filter((f) => f.headers.encrypted === "yes").at(-1);
      expect(last?.headers.nuropb_enc).toBeUndefined(); // rsa-fernet: Python's wire, no header
      expect(pythonService.responses.at(-1)?.headers.nuropb_enc).toBeUndefined();
    },
    T,
  );

  it(
    "tampered, truncated and wrong-key requests get a typed error and are dead-lettered",
    async () => {
      const name = `vault-dl-${newId()}`;
      await startVault(name);
      const raw = createAmqpTransport({ url: mesh.url });
      closers.push(() => raw.close());
      await raw.connect();
      const address = `nuropb-raw-${newId()}-rq`;
      const replies: InboundFrame[] = [];
      await raw.consumeResponses({ address }, (f) => replies.push(f));
      const body = encodePayload({
        tag: "request",
        service: name,
        method: "secretEcho",
        params: { card: "4111" },
        correlation_id: "c-x",
        context: {},
        trace_id: "t",
      }).body;
      const enc = createPayloadEncryptor();
      const announced = createPayloadEncryptor({ keys }).publicKeys.native;
      const sealed = enc.sealRequest(body, { nativePublicKey: announced });
      const tampered = Uint8Array.from(sealed.body);
      tampered[70] = (tampered[70] ?? 0) ^ 0x04;
      const other = createPayloadEncryptor({ keys: createServiceKeys({ nacl: true }) });
      const wrongKey = enc.sealRequest(body, { nativePublicKey: other.publicKeys.native });
      const cases = [
        { id: `tampered-${newId()}`, body: tampered },
        { id: `truncated-${newId()}`, body: sealed.body.slice(0, 50) },
        { id: `wrongkey-${newId()}`, body: wrongKey.body },
      ];
      for (const c of cases) {
        await raw.send(
          { kind: "rpc", service: name },
          {
            headers: { ...buildHeaders("request", "t", true), ...sealed.headers },
            body: c.body,
            correlationId: c.id,
            replyTo: address,
            ttlMs: 10_000,
          },
        );
      }
      await waitFor(() => replies.length === cases.length, T / 2, "three error replies");
      for (const r of replies) {
        const p = decodeFrame(r).payload as ResponsePayload;
        expect(p.error?.error).toBe("NuropbMessageError");
      }
      // The three requests sit on the dead-letter queue, as sent (ciphertext, version-3 envelope).
      const conn = await amqp.connect(mesh.url);
      try {
        const ch = await conn.createChannel();
        const dead: amqp.GetMessage[] = [];
        await waitFor(
          async () => {
            const m = await ch.get("nuropb-dl-queue", { noAck: true });
            if (m !== false) dead.push(m);
            return dead.length === cases.length;
          },
          T / 2,
          "three dead letters",
        );
        expect(dead.map((m) => m.properties.correlationId).sort()).toEqual(
          cases.map((c) => c.id).sort(),
        );
        for (const m of dead) {
          expect(m.properties.headers?.encrypted).toBe("yes");
          expect(m.content[0]).toBe(3);
          expect(m.content.toString("latin1")).not.toContain("4111");
        }
        await ch.close();
      } finally {
        await conn.close();
      }
    },
    T,
  );
});
