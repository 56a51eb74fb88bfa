import { inspect } from "node:util";
import nacl from "tweetnacl";
import { describe, expect, it } from "vitest";
import {
  EncryptionHeader,
  createPayloadEncryptor,
  createServiceKeys,
  naclKeyId,
  type PeerKeys,
  type ReplyKey,
} from "../src/index.ts";
import { expectFailure, text, utf8 } from "./helpers.ts";

// RSA generation is the slow part; make the key material once.
const serviceKeys = createServiceKeys();
const otherKeys = createServiceKeys();
const naclOnly = createServiceKeys({ nacl: true });

function peerOf(keys: { publicKeys: { rsaPem: string | null; nacl: string | null } }): PeerKeys {
  return { rsaPublicKeyPem: keys.publicKeys.rsaPem, naclPublicKey: keys.publicKeys.nacl };
}

function flip(body: Uint8Array, at: number): Uint8Array {
  const copy = Uint8Array.from(body);
  copy[at] = (copy[at] ?? 0) ^ 0x01;
  return copy;
}

describe("suite choice", () => {
  const client = createPayloadEncryptor();

  it("prefers nacl when the peer announced a nacl key", () => {
    expect(client.chooseSuite({ rsaPublicKeyPem: "x", naclPublicKey: "y" })).toBe("nacl");
    expect(client.chooseSuite({ naclPublicKey: "y" })).toBe("nacl");
  });

  it("falls back to rsa-fernet for a peer without a nacl key", () => {
    for (const peer of [
      { rsaPublicKeyPem: "pem" },
      { rsaPublicKeyPem: "pem", naclPublicKey: null },
      { rsaPublicKeyPem: "pem", naclPublicKey: "" },
    ]) {
      expect(client.chooseSuite(peer)).toBe("rsa-fernet");
    }
  });

  it("never seals nacl for a peer without a nacl key", () => {
    const service = createPayloadEncryptor({
      keys: createServiceKeys({ rsa: serviceKeys.rsa?.privateKey ?? false }),
    });
    expect(service.publicKeys.nacl).toBeNull();
    const sealed = client.sealRequest(utf8("{}"), peerOf(service));
    expect(sealed.replyKey.suite).toBe("rsa-fernet");
    expect(sealed.headers).toEqual({});
    expectFailure(
      () => client.sealRequest(utf8("{}"), peerOf(service), { suite: "nacl" }),
      "unsupported",
    );
  });

  it("honours the enabled suites", () => {
    const rsaOnly = createPayloadEncryptor({ suites: ["rsa-fernet"] });
    expect(rsaOnly.chooseSuite({ rsaPublicKeyPem: "pem", naclPublicKey: "k" })).toBe("rsa-fernet");
    expectFailure(() => rsaOnly.chooseSuite({ naclPublicKey: "k" }), "unsupported");
    const naclOnlyClient = createPayloadEncryptor({ suites: ["nacl"] });
    expectFailure(() => naclOnlyClient.chooseSuite({ rsaPublicKeyPem: "pem" }), "unsupported");
    expect(
      createPayloadEncryptor({ keys: serviceKeys, suites: ["nacl"] }).publicKeys.rsaPem,
    ).toBeNull();
  });

  it("throws a typed error for a peer with no keys or unreadable keys", () => {
    expectFailure(() => client.chooseSuite({}), "unsupported");
    expectFailure(
      () => client.sealRequest(utf8("{}"), { rsaPublicKeyPem: "not a pem" }),
      "malformed",
    );
    expectFailure(() => client.sealRequest(utf8("{}"), { naclPublicKey: "AAAA" }), "malformed");
    expectFailure(
      () =>
        client.sealRequest(utf8("{}"), {
          rsaPublicKeyPem:
            serviceKeys.rsa?.privateKey.export({ type: "pkcs8", format: "pem" }).toString() ?? "",
        }),
      "malformed",
    );
  });

  it("validates its options", () => {
    expect(() => createPayloadEncryptor({ rsaKeyReuseMs: -1 })).toThrow(TypeError);
    expect(() => createPayloadEncryptor({ suites: [] })).toThrow(TypeError);
    expect(() => createPayloadEncryptor({ suites: ["aes" as "nacl"] })).toThrow(TypeError);
  });
});

describe("nacl suite", () => {
  const service = createPayloadEncryptor({ keys: serviceKeys });
  const peer = peerOf(service);

  it("round-trips a request and its response; the envelope is as documented", () => {
    const client = createPayloadEncryptor();
    const plain = utf8(JSON.stringify({ tag: "request", params: { x: "héllo 🚀" } }));
    const sealed = client.sealRequest(plain, peer);
    expect(sealed.replyKey.suite).toBe("nacl");
    expect(sealed.headers[EncryptionHeader.suite]).toBe("nacl");
    expect(sealed.headers[EncryptionHeader.keyId]).toBe(
      naclKeyId(serviceKeys.nacl?.publicKey ?? new Uint8Array()),
    );
    expect(sealed.headers[EncryptionHeader.keyId]).toMatch(/^[0-9a-f]{16}$/);
    expect(Buffer.from(sealed.headers[EncryptionHeader.senderKey] ?? "", "base64").length).toBe(32);
    // version(1) + nonce(24) + tag(16) + kind(1) + timestamp(8) + recipient key(32) + plaintext
    expect(sealed.body.length).toBe(1 + 24 + 16 + 9 + 32 + plain.length);
    expect(sealed.body[0]).toBe(2);

    const opened = service.openRequest(
      sealed.body,
      { encrypted: "yes", ...sealed.headers },
      { maxAgeMs: 30_000 },
    );
    expect(text(opened.plain)).toBe(text(plain));
    const reply = service.sealResponse(utf8('{"result":42}'), opened.replyKey);
    expect(reply.headers[EncryptionHeader.suite]).toBe("nacl");
    expect(text(client.openResponse(reply.body, reply.headers, sealed.replyKey))).toBe(
      '{"result":42}',
    );
  });

  it("is tweetnacl's secretbox under box.before(peer, own): checked with its high-level API", () => {
    // An independent reading and writing of the documented envelope, so that sealing through
    // nacl.lowlevel (no copies) stays byte-compatible with plain secretbox / secretbox.open.
    const clientKeys = createServiceKeys({ nacl: true });
    const client = createPayloadEncryptor({ keys: clientKeys });
    const servicePair = serviceKeys.nacl;
    const clientPair = clientKeys.nacl;
    if (servicePair === null || clientPair === null) throw new Error("nacl keys expected");
    const shared = nacl.box.before(servicePair.publicKey, clientPair.secretKey);
    for (const size of [0, 1, 15, 16, 17, 63, 64, 65, 300, 4096]) {
      const plain = Uint8Array.from({ length: size }, (_, i) => (i * 7 + size) & 0xff);
      const sealed = client.sealRequest(plain, peer);
      const inner = nacl.secretbox.open(
        sealed.body.subarray(25),
        sealed.body.subarray(1, 25),
        shared,
      );
      if (inner === null) throw new Error(`secretbox.open refused a ${String(size)}-byte request`);
      expect(inner[0]).toBe(1);
      expect(Buffer.from(inner.subarray(9, 41))).toEqual(Buffer.from(servicePair.publicKey));
      expect(Buffer.from(inner.subarray(41))).toEqual(Buffer.from(plain));
      // A response written with the high-level API: kind 2, time, the request's nonce, plaintext.
      const nonce = nacl.randomBytes(24);
      const head = new Uint8Array(9);
      head[0] = 2;
      new DataView(head.buffer).setUint32(5, Date.now() >>> 0);
      new DataView(head.buffer).setUint32(1, Math.floor(Date.now() / 2 ** 32));
      const boxed = nacl.secretbox(
        Buffer.concat([head, sealed.body.subarray(1, 25), plain]),
        nonce,
        shared,
      );
      const body = Buffer.concat([Uint8Array.of(2), nonce, boxed]);
      const reply = client.openResponse(
        body,
        { [EncryptionHeader.suite]: "nacl" },
        sealed.replyKey,
      );
      expect(Buffer.from(reply)).toEqual(Buffer.from(plain));
    }
  });

  it("refuses a request reflected back to its sender as if it came from the recipient", () => {
    // Two services with static keys share one X25519 key in both directions.
    const aKeys = createServiceKeys({ nacl: true });
    const bKeys = createServiceKeys({ nacl: true });
    const a = createPayloadEncryptor({ keys: aKeys });
    const b = createPayloadEncryptor({ keys: bKeys });
    const sealed = a.sealRequest(utf8('{"method":"transfer"}'), {
      naclPublicKey: b.publicKeys.nacl,
    });
    // B opens what A sent it.
    expect(text(b.openRequest(sealed.body, { encrypted: "yes", ...sealed.headers }).plain)).toBe(
      '{"method":"transfer"}',
    );
    // Sent back to A, claiming to be from B, for A's own key id.
    const reflected = {
      encrypted: "yes",
      ...sealed.headers,
      [EncryptionHeader.keyId]: aKeys.nacl?.kid ?? "",
      [EncryptionHeader.senderKey]: b.publicKeys.nacl ?? "",
    };
    const err = expectFailure(() => a.openRequest(sealed.body, reflected), "tampered");
    expect(err.description).toMatch(/sealed for another recipient/);
  });

  it("refuses the version 1 envelope, which did not bind the recipient", () => {
    const sealed = createPayloadEncryptor().sealRequest(utf8("x"), peer);
    const v1 = Uint8Array.from(sealed.body);
    v1[0] = 1;
    const err = expectFailure(
      () => service.openRequest(v1, { encrypted: "yes", ...sealed.headers }),
      "unsupported",
    );
    expect(err.description).toMatch(/version 1 is refused/);
  });

  it("uses the sender's own nacl key when it has one, and a fresh nonce per message", () => {
    const client = createPayloadEncryptor({ keys: naclOnly });
    const a = client.sealRequest(utf8("a"), peer);
    const b = client.sealRequest(utf8("a"), peer);
    expect(a.headers[EncryptionHeader.senderKey]).toBe(client.publicKeys.nacl);
    expect(Buffer.from(a.body.subarray(1, 25)).equals(Buffer.from(b.body.subarray(1, 25)))).toBe(
      false,
    );
    expect(text(service.openRequest(b.body, b.headers).plain)).toBe("a");
  });

  it("never repeats a nonce (the random pool refills many times over)", () => {
    const client = createPayloadEncryptor();
    const nonces = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      nonces.add(
        Buffer.from(client.sealRequest(utf8(""), peer).body.subarray(1, 25)).toString("hex"),
      );
    }
    expect(nonces.size).toBe(1000);
  });

  it("binds a response to its request", () => {
    const client = createPayloadEncryptor();
    const r1 = client.sealRequest(utf8("one"), peer);
    const r2 = client.sealRequest(utf8("two"), peer);
    const o1 = service.openRequest(r1.body, r1.headers);
    const reply1 = service.sealResponse(utf8("answer one"), o1.replyKey);
    expectFailure(() => client.openResponse(reply1.body, reply1.headers, r2.replyKey), "tampered");
    // A request reflected back as a response, and a response replayed as a request.
    expectFailure(() => client.openResponse(r1.body, r1.headers, r1.replyKey), "tampered");
    expectFailure(() => service.openRequest(reply1.body, r1.headers), "tampered");
  });

  it("refuses tampered, truncated and extended bodies", () => {
    const client = createPayloadEncryptor();
    const sealed = client.sealRequest(utf8("payload"), peer);
    for (const at of [1, 10, 25, 30, 40, sealed.body.length - 1]) {
      expectFailure(() => service.openRequest(flip(sealed.body, at), sealed.headers), "tampered");
    }
    expectFailure(() => service.openRequest(flip(sealed.body, 0), sealed.headers), "unsupported");
    expectFailure(
      () => service.openRequest(sealed.body.subarray(0, 20), sealed.headers),
      "malformed",
    );
    expectFailure(
      () => service.openRequest(sealed.body.subarray(0, sealed.body.length - 1), sealed.headers),
      "tampered",
    );
    const longer = new Uint8Array(sealed.body.length + 1);
    longer.set(sealed.body);
    expectFailure(() => service.openRequest(longer, sealed.headers), "tampered");
  });

  it("refuses a request sealed for another service's key (kid mismatch)", () => {
    const other = createPayloadEncryptor({ keys: otherKeys });
    const sealed = createPayloadEncryptor().sealRequest(utf8("x"), peer);
    const err = expectFailure(() => other.openRequest(sealed.body, sealed.headers), "wrong-key");
    expect(err.description).toContain(sealed.headers[EncryptionHeader.keyId]);
    expect(err.details).toMatchObject({ reason: "wrong-key", suite: "nacl" });
  });

  it("refuses a substituted sender key as tampered", () => {
    const sealed = createPayloadEncryptor().sealRequest(utf8("x"), peer);
    const headers = {
      ...sealed.headers,
      [EncryptionHeader.senderKey]: naclOnly.nacl
        ? Buffer.from(naclOnly.nacl.publicKey).toString("base64")
        : "",
    };
    expectFailure(() => service.openRequest(sealed.body, headers), "tampered");
  });

  it("refuses missing or malformed headers and unknown suites", () => {
    const sealed = createPayloadEncryptor().sealRequest(utf8("x"), peer);
    const { [EncryptionHeader.keyId]: _kid, ...noKid } = sealed.headers;
    expectFailure(() => service.openRequest(sealed.body, noKid), "malformed");
    expectFailure(
      () =>
        service.openRequest(sealed.body, { ...sealed.headers, [EncryptionHeader.senderKey]: "!!" }),
      "malformed",
    );
    expectFailure(
      () =>
        service.openRequest(sealed.body, {
          ...sealed.headers,
          [EncryptionHeader.senderKey]: "AAAA",
        }),
      "malformed",
    );
    expectFailure(
      () => service.openRequest(sealed.body, { ...sealed.headers, [EncryptionHeader.keyId]: 42 }),
      "malformed",
    );
    expectFailure(
      () =>
        service.openRequest(sealed.body, {
          ...sealed.headers,
          [EncryptionHeader.suite]: "aes-gcm",
        }),
      "unsupported",
    );
  });

  it("refuses nacl at a participant without a nacl key", () => {
    const rsaService = createPayloadEncryptor({
      keys: createServiceKeys({ rsa: serviceKeys.rsa?.privateKey ?? false }),
    });
    const sealed = createPayloadEncryptor().sealRequest(utf8("x"), peer);
    expectFailure(() => rsaService.openRequest(sealed.body, sealed.headers), "unsupported");
  });

  it("refuses requests older than maxAgeMs or too far in the future", () => {
    let nowMs = 1_700_000_000_000;
    const now = () => nowMs;
    const client = createPayloadEncryptor({ now });
    const clockedService = createPayloadEncryptor({ keys: serviceKeys, now, clockSkewMs: 5_000 });
    const sealed = client.sealRequest(utf8("x"), peer);
    nowMs += 10_000;
    expect(
      text(clockedService.openRequest(sealed.body, sealed.headers, { maxAgeMs: 10_000 }).plain),
    ).toBe("x");
    nowMs += 1;
    expectFailure(
      () => clockedService.openRequest(sealed.body, sealed.headers, { maxAgeMs: 10_000 }),
      "expired",
    );
    // Without maxAgeMs the timestamp is not checked (as Python does not check Fernet's).
    expect(text(clockedService.openRequest(sealed.body, sealed.headers).plain)).toBe("x");
    nowMs -= 10_001 + 5_001;
    expectFailure(
      () => clockedService.openRequest(sealed.body, sealed.headers, { maxAgeMs: 10_000 }),
      "expired",
    );
  });

  it("keeps working through key rotation with previousKeys", () => {
    const rotated = createServiceKeys({ nacl: true });
    const oldPeer = peer; // a client still holding the old describe
    const after = createPayloadEncryptor({ keys: rotated, previousKeys: [serviceKeys] });
    expect(after.publicKeys.nacl).not.toBe(peer.naclPublicKey);
    const client = createPayloadEncryptor();
    const oldSealed = client.sealRequest(utf8("old"), oldPeer);
    const newSealed = client.sealRequest(utf8("new"), peerOf(after));
    expect(text(after.openRequest(oldSealed.body, oldSealed.headers).plain)).toBe("old");
    expect(text(after.openRequest(newSealed.body, newSealed.headers).plain)).toBe("new");
    const opened = after.openRequest(oldSealed.body, oldSealed.headers);
    const reply = after.sealResponse(utf8("ok"), opened.replyKey);
    expect(text(client.openResponse(reply.body, reply.headers, oldSealed.replyKey))).toBe("ok");
    // Once the old key is retired for good, old requests fail as wrong-key.
    const later = createPayloadEncryptor({ keys: rotated });
    expectFailure(() => later.openRequest(oldSealed.body, oldSealed.headers), "wrong-key");
  });
});

describe("rsa-fernet suite", () => {
  const service = createPayloadEncryptor({ keys: serviceKeys });
  const rsaPeer = { rsaPublicKeyPem: service.publicKeys.rsaPem };

  it("round-trips requests, commands and responses", () => {
    const client = createPayloadEncryptor();
    const sealed = client.sealRequest(utf8('{"tag":"command"}'), rsaPeer);
    const opened = service.openRequest(sealed.body, sealed.headers, { maxAgeMs: 60_000 });
    expect(text(opened.plain)).toBe('{"tag":"command"}');
    const reply = service.sealResponse(utf8('{"tag":"response"}'), opened.replyKey);
    expect(text(client.openResponse(reply.body, reply.headers, sealed.replyKey))).toBe(
      '{"tag":"response"}',
    );
  });

  it("reuses one wrapped key per target within the window, then rotates it", () => {
    let nowMs = 1_700_000_000_000;
    const client = createPayloadEncryptor({
      now: () => nowMs,
      rsaKeyReuseMs: 1_000,
      rsaKeyReuseMaxUses: 3,
    });
    const keyPart = (): string => {
      const wire = Buffer.from(client.sealRequest(utf8("x"), rsaPeer).body).toString("latin1");
      return wire.slice(0, wire.indexOf("."));
    };
    const first = keyPart();
    expect(keyPart()).toBe(first);
    expect(keyPart()).toBe(first);
    const second = keyPart(); // fourth use: max uses reached
    expect(second).not.toBe(first);
    nowMs += 1_000;
    expect(keyPart()).not.toBe(second); // window over
    const fresh = createPayloadEncryptor({ rsaKeyReuseMs: 0 });
    const a = Buffer.from(fresh.sealRequest(utf8("x"), rsaPeer).body).toString("latin1");
    const b = Buffer.from(fresh.sealRequest(utf8("x"), rsaPeer).body).toString("latin1");
    expect(a.slice(0, 344)).not.toBe(b.slice(0, 344));
  });

  it("opens a reused key's requests independently, each with its own reply", () => {
    const client = createPayloadEncryptor();
    const r1 = client.sealRequest(utf8("one"), rsaPeer);
    const r2 = client.sealRequest(utf8("two"), rsaPeer);
    const o1 = service.openRequest(r1.body, r1.headers);
    const o2 = service.openRequest(r2.body, r2.headers);
    expect([text(o1.plain), text(o2.plain)]).toEqual(["one", "two"]);
    const reply2 = service.sealResponse(utf8("answer two"), o2.replyKey);
    expect(text(client.openResponse(reply2.body, reply2.headers, r2.replyKey))).toBe("answer two");
  });

  it("refuses a request wrapped for another RSA key as wrong-key", () => {
    const other = createPayloadEncryptor({ keys: otherKeys });
    const sealed = createPayloadEncryptor().sealRequest(utf8("x"), rsaPeer);
    expectFailure(() => other.openRequest(sealed.body, sealed.headers), "wrong-key");
  });

  it("accepts requests to a previous RSA key after rotation", () => {
    const after = createPayloadEncryptor({ keys: otherKeys, previousKeys: [serviceKeys] });
    const sealed = createPayloadEncryptor().sealRequest(utf8("old"), rsaPeer);
    expect(text(after.openRequest(sealed.body, sealed.headers).plain)).toBe("old");
  });

  it("refuses tampered, truncated and malformed bodies", () => {
    const sealed = createPayloadEncryptor().sealRequest(utf8("payload"), rsaPeer);
    const wire = Buffer.from(sealed.body).toString("latin1");
    const dot = wire.indexOf(".");
    expectFailure(
      () => service.openRequest(Buffer.from(wire.replace(".", ""), "latin1"), {}),
      "malformed",
    );
    expectFailure(() => service.openRequest(Buffer.from(`${wire}A`, "latin1"), {}), "malformed");
    expectFailure(
      () => service.openRequest(Buffer.from(`!${wire.slice(1)}`, "latin1"), {}),
      "malformed",
    );
    const otherChar = wire[5] === "A" ? "B" : "A";
    expectFailure(
      () =>
        service.openRequest(
          Buffer.from(wire.slice(0, 5) + otherChar + wire.slice(6), "latin1"),
          {},
        ),
      "wrong-key",
    );
    // A different, valid token (another key) behind the right key part.
    const foreign = createPayloadEncryptor({ rsaKeyReuseMs: 0 }).sealRequest(
      utf8("payload"),
      rsaPeer,
    );
    const foreignWire = Buffer.from(foreign.body).toString("latin1");
    const spliced = wire.slice(0, dot) + foreignWire.slice(foreignWire.indexOf("."));
    expectFailure(() => service.openRequest(Buffer.from(spliced, "latin1"), {}), "tampered");
    expectFailure(() => service.openRequest(new Uint8Array(0), {}), "malformed");
  });

  it("refuses rsa-fernet at a participant without an RSA key", () => {
    const naclService = createPayloadEncryptor({ keys: naclOnly });
    const sealed = createPayloadEncryptor().sealRequest(utf8("x"), rsaPeer);
    expectFailure(() => naclService.openRequest(sealed.body, sealed.headers), "unsupported");
  });

  it("refuses a response whose suite differs from the request's", () => {
    const client = createPayloadEncryptor();
    const sealed = client.sealRequest(utf8("x"), rsaPeer);
    const opened = service.openRequest(sealed.body, sealed.headers);
    const reply = service.sealResponse(utf8("y"), opened.replyKey);
    expectFailure(
      () => client.openResponse(reply.body, { [EncryptionHeader.suite]: "nacl" }, sealed.replyKey),
      "unsupported",
    );
  });
});

describe("reply keys", () => {
  it("are opaque: logging one shows only its suite", () => {
    const sealed = createPayloadEncryptor().sealRequest(utf8("x"), {
      naclPublicKey: createPayloadEncryptor({ keys: naclOnly }).publicKeys.nacl,
    });
    expect(JSON.stringify(sealed.replyKey)).toBe('{"suite":"nacl"}');
    expect(Object.isFrozen(sealed.replyKey)).toBe(true);
  });

  it("refuses one that this package did not issue", () => {
    const forged: ReplyKey = { suite: "nacl" };
    const enc = createPayloadEncryptor({ keys: naclOnly });
    expectFailure(() => enc.sealResponse(utf8("x"), forged), "unsupported");
    expectFailure(() => enc.openResponse(utf8("x"), {}, forged), "unsupported");
  });
});

describe("bad arguments fail at once with a TypeError that says what was wrong", () => {
  const service = createPayloadEncryptor({ keys: serviceKeys });
  const peer = peerOf(service);

  it("plaintext must be bytes, whichever suite is chosen", () => {
    const client = createPayloadEncryptor();
    for (const suite of ["nacl", "rsa-fernet"] as const) {
      expect(() => client.sealRequest("hello secret" as never, peer, { suite })).toThrow(
        /plain must be a Uint8Array/,
      );
    }
    const sealed = client.sealRequest(utf8("x"), peer);
    const opened = service.openRequest(sealed.body, { encrypted: "yes", ...sealed.headers });
    expect(() => service.sealResponse(undefined as never, opened.replyKey)).toThrow(TypeError);
  });

  it("maxAgeMs must be a finite number >= 0: a caller's mistake, not a refused message", () => {
    const sealed = createPayloadEncryptor().sealRequest(utf8("x"), peer);
    const headers = { encrypted: "yes", ...sealed.headers };
    for (const maxAgeMs of [-1, Number.NaN, "10", null]) {
      expect(() => service.openRequest(sealed.body, headers, { maxAgeMs } as never)).toThrow(
        /maxAgeMs must be a finite number >= 0/,
      );
    }
  });

  it("keys and previousKeys must be ServiceKeys; createServiceKeys refuses rsa: null", () => {
    expect(() => createPayloadEncryptor({ keys: {} as never })).toThrow(/keys must be ServiceKeys/);
    expect(() => createPayloadEncryptor({ previousKeys: [null as never] })).toThrow(
      /previousKeys\[0\] must be ServiceKeys/,
    );
    expect(() =>
      createPayloadEncryptor({ keys: { rsa: null, nacl: { kid: "x" } } as never }),
    ).toThrow(/keys.nacl must be null or a NaclKeyPair/);
    expect(() => createServiceKeys({ rsa: null as never })).toThrow(/rsa must be true, false/);
  });
});

describe("nacl key pairs keep their secret out of JSON and logs", () => {
  it("JSON.stringify and util.inspect show the public key and key id only", () => {
    const keys = createServiceKeys({ nacl: true });
    const pair = keys.nacl;
    if (pair === null) throw new Error("no nacl key");
    const secretBase64 = Buffer.from(pair.secretKey).toString("base64");
    const json = JSON.stringify(keys);
    expect(json).toContain(pair.kid);
    expect(json).not.toContain(secretBase64);
    expect(json).not.toContain("secretKey");
    expect(inspect(keys, { depth: 5 })).not.toContain("secretKey");
    expect(pair.secretKey).toHaveLength(32); // still there for whoever asks by name
  });
});
