import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import {
  NuropbAuthorizationError,
  NuropbMessageError,
  NuropbTransportError,
  NuropbValidationError,
  buildHeaders,
  decodeFrame,
  encodePayload,
  newId,
  type Destination,
  type Frame,
  type InboundFrame,
  type Transport,
  type ResponsePayload,
} from "@nuropb/protocol";
import {
  createPayloadEncryptor,
  createServiceKeys,
  encodeNaclPublicKey,
  type PayloadEncryptor,
  type ServiceKeys,
} from "@nuropb/crypto";
import { createClient, createService, publishToMesh, type RequestContext } from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

class Vault {
  readonly remembered: unknown[] = [];
  @publishToMesh({ requiresEncryption: true })
  secretEcho(params: { card: string }, ctx: RequestContext): unknown {
    ctx.addEvent({ topic: "vault.used", event: { last4: params.card.slice(-4) } });
    return { secret: params, encrypted: ctx.encrypted };
  }
  @publishToMesh({ requiresEncryption: true })
  secretFail(): never {
    throw new NuropbValidationError("invalid field: pin");
  }
  @publishToMesh({ requiresEncryption: true })
  remember(params: { value: string }): void {
    this.remembered.push(params.value);
  }
  open(): string {
    return "plain is fine here";
  }
}

let keys: ServiceKeys;
beforeAll(() => {
  keys = createServiceKeys({ rsa: true, nacl: true });
});

const VARIANTS = (["nacl", "rsa-fernet"] as const).flatMap((suite) =>
  [0, 1].map((cipherThreads) => ({ suite, cipherThreads })),
);

for (const { suite, cipherThreads } of VARIANTS) {
  describe(`end-to-end encryption, ${suite}, ${cipherThreads} cipher threads`, () => {
    let mesh: ReturnType<typeof createMesh>;
    let vault: Vault;
    let service: ReturnType<typeof createService<Vault>>;
    let client: ReturnType<typeof createClient>;
    let events: InboundFrame[];

    beforeEach(async () => {
      mesh = createMesh();
      vault = new Vault();
      service = createService({
        transport: mesh.transport(),
        name: "vault",
        instance: vault,
        keys,
        encryption: { cipherThreads },
      });
      client = createClient({
        transport: mesh.transport(),
        encryption: { suites: [suite], cipherThreads },
      });
      await service.connect();
      await client.connect();
      events = [];
      const tap = mesh.transport();
      await tap.connect();
      await tap.consumeService(
        { service: `tap-${newId()}`, rpcBindings: [], eventBindings: ["vault.#"], prefetch: 0 },
        async (d) => {
          events.push(d);
          await d.ack();
        },
      );
      mesh.defer(() => client.disconnect());
      mesh.defer(() => service.disconnect());
    });
    afterEach(() => mesh.cleanup());

    it("describes the keys Python and TypeScript peers look for", async () => {
      const d = await client.describeService("vault");
      expect(d.public_key).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
      expect(d.nacl_public_key).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      expect(d.encrypted_methods).toBe(true);
      expect(d.methods.secretEcho?.requires_encryption).toBe(true);
      expect(await client.hasPublicKey("vault")).toBe(true);
    });

    it("encrypts request and response; events raised go out as honest plaintext", async () => {
      const r = await client.request(
        "vault",
        "secretEcho",
        { card: "4111" },
        { who: "me" },
        { encrypted: true },
      );
      expect(r).toEqual({ secret: { card: "4111" }, encrypted: true });
      await waitFor(() => events.length === 1);
      const ev = events[0] as InboundFrame;
      expect(ev.headers.encrypted).toBe("");
      expect(decodeFrame(ev).payload).toMatchObject({
        topic: "vault.used",
        event: { last4: "4111" },
        context: { who: "me" },
      });
    });

    it("encrypts automatically once the description says the method requires it", async () => {
      await client.describeService("vault");
      expect(await client.request("vault", "secretEcho", { card: "5500" })).toMatchObject({
        encrypted: true,
      });
    });

    it("refuses a plaintext call to a method that requires encryption; the handler never runs", async () => {
      const e = await client
        .request("vault", "secretEcho", { card: "1" }, {}, { encrypted: false })
        .catch((x: unknown) => x);
      expect(e).toBeInstanceOf(NuropbAuthorizationError);
      expect(events).toHaveLength(0);
      await client.command("vault", "remember", { value: "plain" }, {}, { encrypted: false });
      await waitFor(() => mesh.hub.deadLetters().length === 2);
      expect(vault.remembered).toEqual([]);
    });

    it("errors of encrypted calls come back encrypted and typed; the dead letter holds only ciphertext", async () => {
      const e = await client
        .request("vault", "secretFail", {}, {}, { encrypted: true })
        .catch((x: unknown) => x);
      expect(e).toBeInstanceOf(NuropbValidationError);
      expect((e as NuropbValidationError).description).toBe("invalid field: pin");
      await waitFor(() => mesh.hub.deadLetters().length === 1);
      const dl = mesh.hub.deadLetters()[0];
      expect(dl?.frame.headers.encrypted).toBe("yes");
      expect(dl?.frame.headers.nuropb_enc).toBe(suite === "nacl" ? "nacl" : undefined);
      expect(new TextDecoder().decode(dl?.frame.body)).not.toContain("secretFail");
    });

    it("encrypted commands run", async () => {
      await client.command("vault", "remember", { value: "sealed" }, {}, { encrypted: true });
      await waitFor(() => vault.remembered.length === 1);
      expect(vault.remembered).toEqual(["sealed"]);
    });

    it("forgets per-request keys once calls complete, fail or time out", async () => {
      await client.describeService("vault");
      const calls = [
        client.request("vault", "secretEcho", { card: "1" }, {}, { encrypted: true }),
        client.request("vault", "secretFail", {}, {}, { encrypted: true }),
        client.request("vault", "secretEcho", { card: "2" }, {}, { encrypted: true }),
      ];
      const outcomes = await Promise.allSettled(calls);
      expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      expect(client.pendingRequests).toBe(0);
      // A call nobody answers: its key goes with the timeout.
      const t = mesh.transport();
      await t.connect();
      const l = await t.consumeService(
        { service: "vault2", rpcBindings: [], eventBindings: [], prefetch: 1 },
        () => {},
      );
      await l.stop();
      const late = client.request("vault2", "x", {}, {}, { ttlMs: 50 }).catch((x: unknown) => x);
      expect(client.pendingRequests).toBe(1);
      await late;
      expect(client.pendingRequests).toBe(0);
    });

    it("plain methods still work without encryption", async () => {
      expect(await client.request("vault", "open")).toBe("plain is fine here");
    });
  });
}

describe("refusals of bad ciphertext", () => {
  let mesh: ReturnType<typeof createMesh>;
  beforeEach(async () => {
    mesh = createMesh();
    const service = createService({
      transport: mesh.transport(),
      name: "vault",
      instance: new Vault(),
      keys,
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
  });
  afterEach(() => mesh.cleanup());

  it("tampered, truncated and wrong-key ciphertexts get a typed error reply and are dead-lettered once", async () => {
    const raw = mesh.transport();
    await raw.connect();
    const address = `nuropb-raw-${newId()}-rq`;
    const replies: InboundFrame[] = [];
    await raw.consumeResponses({ address }, (f) => replies.push(f));
    // Seal genuine requests with a client, capture the ciphertext from the dead letters of a
    // queue nobody consumes, then tamper with copies.
    const other = createServiceKeys({ rsa: true, nacl: true });
    const { createPayloadEncryptor } = await import("@nuropb/crypto");
    const enc = createPayloadEncryptor({ suites: ["rsa-fernet"] });
    const encWrong = createPayloadEncryptor({ suites: ["nacl"] });
    const peer = { rsaPublicKeyPem: keys.rsa?.publicKeyPem ?? null, naclPublicKey: null };
    const body = encodePayload({
      tag: "request",
      service: "vault",
      method: "secretEcho",
      params: { card: "4111" },
      correlation_id: "c-x",
      context: {},
      trace_id: "t",
    }).body;
    const sealed = enc.sealRequest(body, peer);
    const tampered = Uint8Array.from(sealed.body);
    tampered[tampered.length - 10] = tampered[tampered.length - 10] === 65 ? 66 : 65;
    const wrongKey = encWrong.sealRequest(body, {
      naclPublicKey: other.nacl === null ? null : encodeNaclPublicKey(other.nacl.publicKey),
    });
    const cases = [
      { id: "tampered", body: tampered, headers: {} },
      { id: "truncated", body: sealed.body.slice(0, 200), headers: {} },
      { id: "wrongkey", body: wrongKey.body, headers: wrongKey.headers },
    ];
    for (const c of cases) {
      await raw.send(
        { kind: "rpc", service: "vault" },
        {
          headers: { ...buildHeaders("request", "t", true), ...c.headers },
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
      expect(p.error?.error).toBe("NuropbMessageError");
    }
    await waitFor(() => mesh.hub.deadLetters().length === cases.length);
    expect(mesh.hub.deadLetters()).toHaveLength(cases.length);
  });

  it("refuses ciphertext replayed after its ttl", async () => {
    const old = createClient({
      transport: mesh.transport(),
      encryption: { now: () => Date.now() - 10 * 60_000 },
    });
    await old.connect();
    mesh.defer(() => old.disconnect());
    await old.describeService("vault");
    const e = await old
      .request("vault", "secretEcho", { card: "1" }, {}, { encrypted: true, ttlMs: 1000 })
      .catch((x: unknown) => x);
    expect((e as { wireName?: string }).wireName).toBe("NuropbMessageError");
  });
});

/** `transport` with some members replaced; every other member is the transport's own. */
function withOverrides(transport: Transport, overrides: Partial<Transport>): Transport {
  return new Proxy(transport, {
    get(target, prop) {
      if (Object.hasOwn(overrides, prop)) return overrides[prop as keyof Transport];
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? (value as () => unknown).bind(target) : value;
    },
  });
}

describe("two responses to one encrypted request (Python peers send two on failure)", () => {
  for (const cipherThreads of [0, 1]) {
    it(`the first to arrive wins, even while it is being opened (${cipherThreads} cipher threads)`, async () => {
      const mesh = createMesh();
      try {
        // The service's transport sends a plaintext error right behind each of its replies.
        const inner = mesh.transport();
        const doubling = withOverrides(inner, {
          send: async (to: Destination, frame: Frame): Promise<void> => {
            await inner.send(to, frame);
            if (to.kind !== "reply") return;
            await inner.send(
              to,
              encodePayload({
                tag: "response",
                result: null,
                error: { error: "NuropbHandlingError", description: "second" },
                correlation_id: frame.correlationId,
                trace_id: null,
                context: {},
                warning: null,
                reply_to: "",
              }),
            );
          },
        });
        const service = createService({
          transport: doubling,
          name: "vault",
          instance: new Vault(),
          keys,
          encryption: { cipherThreads },
        });
        await service.connect();
        mesh.defer(() => service.disconnect());
        const client = createClient({ transport: mesh.transport(), encryption: { cipherThreads } });
        await client.connect();
        mesh.defer(() => client.disconnect());
        for (let i = 0; i < 20; i++) {
          expect(
            await client.request("vault", "secretEcho", { card: `${i}` }, {}, { encrypted: true }),
          ).toEqual({ secret: { card: `${i}` }, encrypted: true });
        }
        expect(client.pendingRequests).toBe(0);
      } finally {
        await mesh.cleanup();
      }
    });
  }
});

describe("a request that cannot be opened for a reason not its own", () => {
  afterEach(() => vi.restoreAllMocks());

  /** A vault service on `transport` and a client that has read its description. */
  async function vaultAndClient(
    mesh: ReturnType<typeof createMesh>,
    transport: Transport,
    encryption: { cipherThreads?: number } = {},
  ): Promise<{ vault: Vault; client: ReturnType<typeof createClient> }> {
    const vault = new Vault();
    const service = createService({ transport, name: "vault", instance: vault, keys, encryption });
    await service.connect();
    mesh.defer(() => service.disconnect());
    const client = createClient({ transport: mesh.transport() });
    await client.connect();
    mesh.defer(() => client.disconnect());
    await client.describeService("vault");
    return { vault, client };
  }

  /** What an open that a stopped cipher thread left undone rejects with. */
  const stopped = (): Promise<never> =>
    Promise.reject(
      new NuropbTransportError("the cipher threads were stopped before the operation completed", {
        retryable: true,
      }),
    );
  // Every encryptor shares the prototype: a spy on it reaches the service's.
  const proto = (): PayloadEncryptor =>
    Object.getPrototypeOf(createPayloadEncryptor()) as PayloadEncryptor;

  it("is requeued once (cipher thread stopped), then handled; failing so twice, dead-lettered", async () => {
    const mesh = createMesh();
    try {
      const { vault, client } = await vaultAndClient(mesh, mesh.transport(), { cipherThreads: 1 });
      const open = vi.spyOn(proto(), "openRequestAsync").mockImplementationOnce(stopped);
      await client.command("vault", "remember", { value: "once" }, {}, { encrypted: true });
      await waitFor(() => vault.remembered.length === 1);
      expect(vault.remembered).toEqual(["once"]);
      expect(open).toHaveBeenCalledTimes(2); // the first delivery, then the redelivered copy
      expect(mesh.hub.deadLetters()).toHaveLength(0);

      open.mockImplementationOnce(stopped).mockImplementationOnce(stopped);
      const e = await client
        .request("vault", "secretEcho", { card: "9" }, {}, { encrypted: true })
        .catch((x: unknown) => x);
      expect(e).toBeInstanceOf(NuropbMessageError);
      await waitFor(() => mesh.hub.deadLetters().length === 1);
    } finally {
      await mesh.cleanup();
    }
  });

  it("is dead-lettered at once on a transport that cannot redeliver (no requeue loop)", async () => {
    const mesh = createMesh();
    try {
      const inner = mesh.transport();
      const noRedelivery = withOverrides(inner, {
        capabilities: { ...inner.capabilities, redelivery: false },
      });
      // Only an open on a cipher thread can fail so (without threads it runs synchronously).
      const { vault, client } = await vaultAndClient(mesh, noRedelivery, { cipherThreads: 1 });
      vi.spyOn(proto(), "openRequestAsync").mockImplementationOnce(stopped);
      await client.command("vault", "remember", { value: "lost?" }, {}, { encrypted: true });
      await waitFor(() => mesh.hub.deadLetters().length === 1);
      expect(vault.remembered).toEqual([]);
    } finally {
      await mesh.cleanup();
    }
  });
});
