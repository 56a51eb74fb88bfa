import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
} from "node:crypto";
import { inspect } from "node:util";
import nacl from "tweetnacl";
import { describe, expect, it } from "vitest";
import {
  CipherSuite,
  DecryptFailure,
  EncryptionHeader,
  createPayloadEncryptor,
  createServiceKeys,
  naclKeyPairFromSecretKey,
  type PeerKeys,
  type ServiceKeys,
} from "../src/index.ts";
import {
  NativePair,
  OpenWindows,
  SendStream,
  generateNativeKeyPair,
  openNativeRequest,
  sealNativeRequest,
  x25519PublicKey,
} from "../src/native-suite.ts";
import { expectFailure, fixture, text, utf8 } from "./helpers.ts";

const NATIVE = CipherSuite.native;
const serviceKeys = createServiceKeys({ nacl: true });
const otherKeys = createServiceKeys({ nacl: true });

/** Every key a participant announces, as core reads them from its description. */
function peerOf(e: {
  publicKeys: { rsaPem: string | null; nacl: string | null; native: string | null };
}): PeerKeys {
  return {
    rsaPublicKeyPem: e.publicKeys.rsaPem,
    naclPublicKey: e.publicKeys.nacl,
    nativePublicKey: e.publicKeys.native,
  };
}

function flip(body: Uint8Array, at: number): Uint8Array {
  const copy = Uint8Array.from(body);
  copy[at] = (copy[at] ?? 0) ^ 0x01;
  return copy;
}

/** X25519 private KeyObject of 32 raw bytes (PKCS#8, RFC 8410), written out independently. */
function x25519Private(raw: Uint8Array) {
  const der = Buffer.concat([Buffer.from("302e020100300506032b656e04220420", "hex"), raw]);
  return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
}

interface Vectors {
  serviceNaclSecretKey: string;
  clientNaclSecretKey: string;
  serviceNativePublicKey: string;
  clientNativePublicKey: string;
  requestHeaders: Record<string, string>;
  requestPlain: string;
  requestBody: string;
  responseHeaders: Record<string, string>;
  responsePlain: string;
  responseBody: string;
}

describe("x25519-aes-gcm: suite choice and announcement", () => {
  const service = createPayloadEncryptor({ keys: serviceKeys });

  it("announces a native key derived from (and different from) the nacl key", () => {
    expect(service.publicKeys.native).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect(service.publicKeys.native).not.toBe(service.publicKeys.nacl);
    // Derived, not random: a second encryptor over the same keys (another instance) agrees.
    expect(createPayloadEncryptor({ keys: serviceKeys }).publicKeys.native).toBe(
      service.publicKeys.native,
    );
    expect(createPayloadEncryptor({ keys: otherKeys }).publicKeys.native).not.toBe(
      service.publicKeys.native,
    );
  });

  it("is preferred, then nacl, then rsa-fernet (a Python peer announces only RSA)", () => {
    const client = createPayloadEncryptor();
    const peer = peerOf(service);
    expect(client.chooseSuite(peer)).toBe(NATIVE);
    expect(client.chooseSuite({ ...peer, nativePublicKey: null })).toBe("nacl");
    expect(client.chooseSuite({ rsaPublicKeyPem: "-----BEGIN PUBLIC KEY-----x" })).toBe(
      "rsa-fernet",
    );
    expect(createPayloadEncryptor({ suites: ["nacl"] }).chooseSuite(peer)).toBe("nacl");
  });

  it("announces nothing for the suite when it is not enabled or there is no nacl key", () => {
    expect(createPayloadEncryptor({ keys: serviceKeys, suites: ["nacl"] }).publicKeys.native).toBe(
      null,
    );
    expect(createPayloadEncryptor().publicKeys.native).toBe(null);
    const rsaOnly = createServiceKeys({ rsa: true });
    expect(createPayloadEncryptor({ keys: rsaOnly }).publicKeys.native).toBe(null);
  });

  it("a bad announced key is a typed failure at once; bad options are a TypeError", () => {
    const client = createPayloadEncryptor();
    const bad = [
      "not base64!",
      Buffer.alloc(31, 1).toString("base64"),
      Buffer.alloc(33, 1).toString("base64"),
      Buffer.alloc(32, 0xff).toString("base64"), // top bit set: refused, not reduced
    ];
    for (const nativePublicKey of bad) {
      expectFailure(
        () => client.sealRequest(utf8("x"), { nativePublicKey }),
        DecryptFailure.malformed,
      );
    }
    // An all-zero key is of small order: X25519 yields an all-zero secret, refused by OpenSSL.
    expectFailure(
      () => client.sealRequest(utf8("x"), { nativePublicKey: Buffer.alloc(32).toString("base64") }),
      DecryptFailure.malformed,
    );
    expect(() => createPayloadEncryptor({ suites: ["x25519-aes-gcm", "aes" as never] })).toThrow(
      TypeError,
    );
    expectFailure(
      () =>
        createPayloadEncryptor({ suites: [NATIVE] }).sealRequest(utf8("x"), {
          naclPublicKey: service.publicKeys.nacl,
        }),
      DecryptFailure.unsupported,
    );
  });
});

describe("x25519-aes-gcm: envelopes", () => {
  const now = 1_765_000_000_000;
  const clock = { ms: now };
  const service = createPayloadEncryptor({ keys: serviceKeys, now: () => clock.ms });
  const other = createPayloadEncryptor({ keys: otherKeys, now: () => clock.ms });
  const client = createPayloadEncryptor({ now: () => clock.ms });
  const peer = peerOf(service);

  it("round-trips a request and its response with no header (version 2 names itself)", () => {
    const sealed = client.sealRequest(utf8('{"q":1}'), peer);
    expect(sealed.replyKey.suite).toBe(NATIVE);
    expect(sealed.headers).toEqual({});
    expect(sealed.body.length).toBe(66 + 7 + 16);
    expect(sealed.body[0]).toBe(2); // version 2: AES-256-CTR stream + Poly1305
    expect(sealed.body[1]).toBe(1); // request
    const opened = service.openRequest(sealed.body, sealed.headers, { maxAgeMs: 1000 });
    expect(text(opened.plain)).toBe('{"q":1}');
    const reply = service.sealResponse(utf8('{"a":2}'), opened.replyKey);
    expect(reply.headers).toEqual({});
    expect(reply.body.length).toBe(26 + 7 + 16);
    expect(reply.body[0]).toBe(2);
    expect(text(client.openResponse(reply.body, reply.headers, sealed.replyKey))).toBe('{"a":2}');
    // An empty body seals too.
    const empty = client.sealRequest(new Uint8Array(0), peer);
    expect(service.openRequest(empty.body, empty.headers).plain.length).toBe(0);
  });

  it("matches the documented format: HKDF-SHA256 of X25519, AES-256-GCM, head as AAD", () => {
    const v = fixture<Vectors>("x25519-aes-gcm-vectors.json");
    const sKeys: ServiceKeys = {
      rsa: null,
      nacl: naclKeyPairFromSecretKey(v.serviceNaclSecretKey),
    };
    const cKeys: ServiceKeys = { rsa: null, nacl: naclKeyPairFromSecretKey(v.clientNaclSecretKey) };
    const s = createPayloadEncryptor({ keys: sKeys });
    expect(s.publicKeys.native).toBe(v.serviceNativePublicKey);
    expect(createPayloadEncryptor({ keys: cKeys }).publicKeys.native).toBe(v.clientNativePublicKey);
    // The implementation opens the stored request (another build sealed it).
    const request = Buffer.from(v.requestBody, "hex");
    expect(text(s.openRequest(request, v.requestHeaders).plain)).toBe(v.requestPlain);
    // And the format, rebuilt here with node:crypto alone.
    const salt = Buffer.from("nuropb x25519-aes-gcm v1");
    const derive = (naclSecret: string) =>
      x25519Private(
        Buffer.from(
          hkdfSync(
            "sha256",
            Buffer.from(naclSecret, "base64"),
            salt,
            Buffer.from("nuropb x25519-aes-gcm static key v1"),
            32,
          ),
        ),
      );
    const servicePrivate = derive(v.serviceNaclSecretKey);
    const servicePublic = Buffer.from(v.serviceNativePublicKey, "base64");
    const clientPublic = Buffer.from(v.clientNativePublicKey, "base64");
    expect(request.subarray(18, 50)).toEqual(clientPublic); // sender key in the body
    const shared = diffieHellman({
      privateKey: servicePrivate,
      publicKey: createPublicKey({
        key: { kty: "OKP", crv: "X25519", x: clientPublic.toString("base64url") },
        format: "jwk",
      }),
    });
    const key = Buffer.from(
      hkdfSync("sha256", shared, salt, Buffer.concat([clientPublic, servicePublic]), 32),
    );
    const open = (body: Buffer, head: number, nonceAt: number, extraAad: Buffer) => {
      const d = createDecipheriv("aes-256-gcm", key, body.subarray(nonceAt, nonceAt + 12));
      d.setAAD(Buffer.concat([body.subarray(0, head), extraAad]));
      d.setAuthTag(body.subarray(body.length - 16));
      return Buffer.concat([d.update(body.subarray(head, body.length - 16)), d.final()]);
    };
    expect(open(request, 62, 50, Buffer.alloc(0)).toString()).toBe(v.requestPlain);
    const response = Buffer.from(v.responseBody, "hex");
    expect(open(response, 22, 10, request.subarray(50, 62)).toString()).toBe(v.responsePlain);
    expect(v.responseHeaders).toEqual({ [EncryptionHeader.suite]: NATIVE });
  });

  it("matches the documented version-2 format: HKDF v2 keys, AES-256-CTR stream, Poly1305", () => {
    const v = fixture<Vectors>("x25519-aes-gcm-v2-vectors.json");
    const s = createPayloadEncryptor({
      keys: { rsa: null, nacl: naclKeyPairFromSecretKey(v.serviceNaclSecretKey) },
    });
    const request = Buffer.from(v.requestBody, "hex");
    expect(text(s.openRequest(request, v.requestHeaders).plain)).toBe(v.requestPlain);
    // Rebuilt here from node:crypto and tweetnacl's Poly1305 alone.
    const servicePrivate = x25519Private(
      Buffer.from(
        hkdfSync(
          "sha256",
          Buffer.from(v.serviceNaclSecretKey, "base64"),
          Buffer.from("nuropb x25519-aes-gcm v1"),
          Buffer.from("nuropb x25519-aes-gcm static key v1"),
          32,
        ),
      ),
    );
    const clientPublic = Buffer.from(v.clientNativePublicKey, "base64");
    const shared = diffieHellman({
      privateKey: servicePrivate,
      publicKey: createPublicKey({
        key: { kty: "OKP", crv: "X25519", x: clientPublic.toString("base64url") },
        format: "jwk",
      }),
    });
    const keys = Buffer.from(
      hkdfSync(
        "sha256",
        shared,
        Buffer.from("nuropb x25519-aes-gcm v2"),
        Buffer.concat([clientPublic, Buffer.from(v.serviceNativePublicKey, "base64")]),
        64,
      ),
    );
    const poly = (
      nacl as unknown as {
        lowlevel: {
          crypto_onetimeauth(
            o: Uint8Array,
            op: number,
            m: Uint8Array,
            mp: number,
            n: number,
            k: Uint8Array,
          ): number;
        };
      }
    ).lowlevel;
    const open = (body: Buffer, key: Buffer, head: number, binding: Buffer) => {
      const n = body.length - head - 16;
      const ks = createCipheriv("aes-256-ctr", key, body.subarray(head - 16, head)).update(
        Buffer.alloc(32 + n),
      );
      const tag = new Uint8Array(16);
      const mac = Buffer.concat([body.subarray(0, head + n), binding]);
      poly.crypto_onetimeauth(tag, 0, mac, 0, mac.length, ks.subarray(0, 32));
      expect(Buffer.from(tag)).toEqual(body.subarray(head + n));
      const plain = Buffer.alloc(n);
      for (let i = 0; i < n; i++) plain[i] = (body[head + i] ?? 0) ^ (ks[32 + i] ?? 0);
      return plain.toString();
    };
    expect(request[0]).toBe(2);
    expect(request.readUInt32BE(62)).toBe(9); // the stream's fourth message: 3 × 3 blocks before
    expect(open(request, keys.subarray(0, 32), 66, Buffer.alloc(0))).toBe(v.requestPlain);
    const response = Buffer.from(v.responseBody, "hex");
    // The response: the response key, its request's salt ‖ counter after the ciphertext.
    expect(open(response, keys.subarray(32), 26, request.subarray(50, 66))).toBe(v.responsePlain);
    expect(v.responseHeaders).toEqual({ [EncryptionHeader.suite]: NATIVE });
  });

  it("a sender stream starts again at a new salt before its counter would wrap", () => {
    const key = new Uint8Array(32).fill(3);
    const stream = new SendStream(key, 1024); // 1024 blocks: two chunks of 512
    const nonce = new Uint8Array(16);
    const salts = new Set<string>();
    let last = -1;
    for (let i = 0; i < 1000; i++) {
      const ks = stream.take(5, nonce, 0);
      const salt = Buffer.from(nonce.subarray(0, 12)).toString("hex");
      const counter = Buffer.from(nonce).readUInt32BE(12);
      if (!salts.has(salt)) {
        salts.add(salt);
        expect(counter).toBe(0);
      } else expect(counter).toBeGreaterThan(last);
      expect(counter + 5).toBeLessThanOrEqual(1024);
      // The keystream handed out is AES-256-CTR at salt ‖ counter.
      const want = createCipheriv("aes-256-ctr", key, nonce).update(Buffer.alloc(80));
      expect(Buffer.from(ks)).toEqual(want);
      last = counter;
    }
    // 1000 × 5 blocks, at most 1020 per 1024-block stream: at least 5 streams.
    expect(salts.size).toBeGreaterThanOrEqual(5);
  });

  it("a receiver keeps keystream only for streams that authenticated, and only small windows", () => {
    const c = generateNativeKeyPair();
    const s = generateNativeKeyPair();
    const sending = new NativePair(
      c.privateKey,
      x25519PublicKey(s.publicKey),
      c.publicKey,
      s.publicKey,
      "sender",
    );
    const receiving = new NativePair(
      s.privateKey,
      x25519PublicKey(c.publicKey),
      c.publicKey,
      s.publicKey,
      "recipient",
    );
    const sealed = sealNativeRequest(utf8("hello"), sending, c.publicKey, now).body;
    const forged = Buffer.from(sealed);
    forged[forged.length - 1] = (forged[forged.length - 1] ?? 0) ^ 1;
    expectFailure(() => openNativeRequest(forged, receiving), DecryptFailure.tampered);
    expect(receiving.opening.size).toBe(0); // a forgery leaves nothing behind
    expect(text(openNativeRequest(sealed, receiving))).toBe("hello");
    expect(receiving.opening.size).toBe(1);
    // Windows are bounded: made for a body longer than one (8 kB here), none is kept; at most
    // four streams are remembered.
    const windows = new OpenWindows(new Uint8Array(32).fill(1));
    const salt = (i: number) => new Uint8Array(12).fill(i);
    windows.keystream(salt(9), 0, 512);
    windows.confirm();
    expect(windows.size).toBe(0);
    for (let i = 0; i < 6; i++) {
      windows.keystream(salt(i), 0, 3);
      windows.confirm();
    }
    expect(windows.size).toBe(4);
  });

  it("never uses a keystream block twice, even between senders that share a static key", () => {
    // Two client instances holding the same keys derive the same request key: each stream has
    // its own random salt. Blocks used per (direction, salt) must never overlap.
    const c1 = createPayloadEncryptor({ keys: otherKeys, now: () => clock.ms });
    const c2 = createPayloadEncryptor({ keys: otherKeys, now: () => clock.ms });
    const s2 = createPayloadEncryptor({ keys: serviceKeys, now: () => clock.ms });
    const used = new Map<string, Set<number>>();
    const record = (direction: string, body: Uint8Array, nonceAt: number, head: number) => {
      const b = Buffer.from(body);
      const stream = `${direction}:${b.toString("hex", nonceAt, nonceAt + 12)}`;
      const counter = b.readUInt32BE(nonceAt + 12);
      const blocks = 2 + Math.ceil((b.length - head - 16) / 16);
      const set = used.get(stream) ?? new Set<number>();
      for (let i = counter; i < counter + blocks; i++) {
        expect(set.has(i), `${stream} block ${i} used twice`).toBe(false);
        set.add(i);
      }
      used.set(stream, set);
    };
    for (let i = 0; i < 3000; i++) {
      const c = i % 2 === 0 ? c1 : c2;
      const s = i % 3 === 0 ? s2 : service;
      const sealed = c.sealRequest(utf8("x".repeat(i % 700)), peer);
      record("request", sealed.body, 50, 66);
      const opened = s.openRequest(sealed.body, sealed.headers);
      expect(opened.plain.length).toBe(i % 700);
      const reply = s.sealResponse(utf8("y".repeat(i % 300)), opened.replyKey);
      record("response", reply.body, 10, 26);
      expect(c.openResponse(reply.body, reply.headers, sealed.replyKey).length).toBe(i % 300);
    }
    // Two request streams (one per client instance), and one response stream per service
    // instance (to both clients: they hold the same key, so it is one pair of keys).
    expect([...used.keys()].filter((k) => k.startsWith("request:")).length).toBe(2);
    expect([...used.keys()].filter((k) => k.startsWith("response:")).length).toBe(2);
  });

  it("opens a stream's messages out of order, with gaps, and shared among instances", () => {
    const sealed = Array.from({ length: 200 }, (_, i) =>
      client.sealRequest(utf8(`{"n":${i}}`.padEnd(100 + (i % 50), " ")), peer),
    );
    const a = createPayloadEncryptor({ keys: serviceKeys });
    const b = createPayloadEncryptor({ keys: serviceKeys });
    // a gets every third message in order, b the others from the last to the first.
    const order = sealed.map((_, i) => i);
    for (const i of order.filter((i) => i % 3 === 0)) {
      expect(text(a.openRequest(sealed[i]!.body, sealed[i]!.headers).plain).trim()).toBe(
        `{"n":${i}}`,
      );
    }
    for (const i of order.filter((i) => i % 3 !== 0).reverse()) {
      expect(text(b.openRequest(sealed[i]!.body, sealed[i]!.headers).plain).trim()).toBe(
        `{"n":${i}}`,
      );
    }
    // And again (redelivered copies), then damaged copies still fail.
    for (const i of [0, 199, 57, 58]) {
      expect(text(a.openRequest(sealed[i]!.body, sealed[i]!.headers).plain).trim()).toBe(
        `{"n":${i}}`,
      );
      expectFailure(
        () => a.openRequest(flip(sealed[i]!.body, 70), sealed[i]!.headers),
        DecryptFailure.tampered,
      );
    }
  });

  it("seals bodies over 1024 bytes as version 1 (AES-256-GCM), and answers version 1 in kind", () => {
    for (const size of [1024, 1025, 70_000]) {
      const sealed = client.sealRequest(new Uint8Array(size).fill(7), peer);
      expect(sealed.body[0]).toBe(size > 1024 ? 1 : 2);
      // Version 1 names its suite in nuropb_enc, as earlier builds require.
      expect(sealed.headers).toEqual(size > 1024 ? { [EncryptionHeader.suite]: NATIVE } : {});
      const opened = service.openRequest(sealed.body, sealed.headers);
      expect(Buffer.from(opened.plain).equals(Buffer.alloc(size, 7))).toBe(true);
      for (const answer of [10, 1025]) {
        const reply = service.sealResponse(new Uint8Array(answer).fill(9), opened.replyKey);
        // A version-1 request may come from an earlier build, which reads only version 1.
        expect(reply.body[0]).toBe(answer > 1024 || size > 1024 ? 1 : 2);
        expect(reply.headers).toEqual(
          reply.body[0] === 1 ? { [EncryptionHeader.suite]: NATIVE } : {},
        );
        const back = client.openResponse(reply.body, reply.headers, sealed.replyKey);
        expect(Buffer.from(back).equals(Buffer.alloc(answer, 9))).toBe(true);
      }
    }
  });

  it("without nuropb_enc, reads a binary body as x25519-aes-gcm and text as rsa-fernet", () => {
    const sealed = client.sealRequest(utf8("x"), peer);
    // The header is optional for version 2: named or not, it opens.
    const named = { [EncryptionHeader.suite]: NATIVE };
    expect(text(service.openRequest(sealed.body, named).plain)).toBe("x");
    expect(text(service.openRequest(sealed.body, {}).plain)).toBe("x");
    // An unknown binary version is refused as such, not read as Python's text format.
    const future = Buffer.from(sealed.body);
    future[0] = 0x03;
    expectFailure(() => service.openRequest(future, {}), DecryptFailure.unsupported);
    // A participant without the suite refuses it; a text body still goes to rsa-fernet.
    const rsaOnly = createPayloadEncryptor({ keys: serviceKeys, suites: ["rsa-fernet"] });
    expectFailure(() => rsaOnly.openRequest(sealed.body, {}), DecryptFailure.unsupported);
    const text64 = expectFailure(
      () => service.openRequest(utf8("QUJD.QUJD"), {}),
      DecryptFailure.unsupported,
    );
    expect(text64.description).toMatch(/RSA/); // went to rsa-fernet, which has no key here
  });

  it("refuses a version-2 body whose blocks would run past its stream's 32-bit counter", () => {
    const sealed = client.sealRequest(utf8("x"), peer);
    const past = Buffer.from(sealed.body);
    past.writeUInt32BE(0xffff_ffff, 62); // the counter: 3 blocks from there would wrap
    expectFailure(() => service.openRequest(past, sealed.headers), DecryptFailure.malformed);
    past.writeUInt32BE(0xffff_fffd, 62); // ends exactly at the last block: authenticated, so tampered
    expectFailure(() => service.openRequest(past, sealed.headers), DecryptFailure.tampered);
  });

  it("refuses every flipped byte, truncation and extension with a typed reason", () => {
    const sealed = client.sealRequest(utf8('{"secret":"value"}'), peer);
    for (let at = 0; at < sealed.body.length; at++) {
      const damaged = flip(sealed.body, at);
      const want =
        at === 0
          ? DecryptFailure.unsupported // version
          : at === 1
            ? DecryptFailure.tampered // kind: a response replayed as a request
            : at >= 10 && at < 18
              ? DecryptFailure.wrongKey // key id
              : DecryptFailure.tampered;
      expectFailure(() => service.openRequest(damaged, sealed.headers), want);
    }
    for (const cut of [0, 1, 61, 62 + 15, sealed.body.length - 1]) {
      const reason = cut < 78 ? DecryptFailure.malformed : DecryptFailure.tampered;
      expectFailure(
        () => service.openRequest(sealed.body.subarray(0, cut), sealed.headers),
        reason,
      );
    }
    const extended = Buffer.concat([sealed.body, Buffer.of(0)]);
    expectFailure(() => service.openRequest(extended, sealed.headers), DecryptFailure.tampered);
    const opened = service.openRequest(sealed.body, sealed.headers);
    const reply = service.sealResponse(utf8("answer"), opened.replyKey);
    for (let at = 0; at < reply.body.length; at++) {
      const want = at === 0 ? DecryptFailure.unsupported : DecryptFailure.tampered;
      expectFailure(
        () => client.openResponse(flip(reply.body, at), reply.headers, sealed.replyKey),
        want,
      );
    }
    expectFailure(
      () => client.openResponse(reply.body.subarray(0, 37), reply.headers, sealed.replyKey),
      DecryptFailure.malformed,
    );
  });

  it("refuses a request sealed for another service (wrong key), and a substituted sender", () => {
    const forOther = client.sealRequest(utf8("x"), peerOf(other));
    expectFailure(
      () => service.openRequest(forOther.body, forOther.headers),
      DecryptFailure.wrongKey,
    );
    // Same key id, but another sender key put in its place: the derived key differs.
    const sealed = client.sealRequest(utf8("x"), peer);
    const swapped = Buffer.from(sealed.body);
    Buffer.from(createPayloadEncryptor({ keys: otherKeys }).publicKeys.native ?? "", "base64").copy(
      swapped,
      18,
    );
    expectFailure(() => service.openRequest(swapped, sealed.headers), DecryptFailure.tampered);
  });

  it("keys differ by direction: A's request to B never opens at A as B's", () => {
    const a = createPayloadEncryptor({ keys: serviceKeys });
    const b = createPayloadEncryptor({ keys: otherKeys });
    const toB = a.sealRequest(utf8("to b"), peerOf(b));
    expect(text(b.openRequest(toB.body, toB.headers).plain)).toBe("to b");
    // Reflected to A with A's key id written in: the key derived for B→A is not A→B's.
    const reflected = Buffer.from(toB.body);
    const aToB = a.sealRequest(utf8("probe"), peerOf(a)); // A's own key id, from a request to A
    Buffer.from(aToB.body.subarray(10, 18)).copy(reflected, 10);
    Buffer.from(b.publicKeys.native ?? "", "base64").copy(reflected, 18);
    expectFailure(() => a.openRequest(reflected, toB.headers), DecryptFailure.tampered);
  });

  it("binds a response to its request, and a response never opens as a request", () => {
    const one = client.sealRequest(utf8("one"), peer);
    const two = client.sealRequest(utf8("two"), peer);
    const opened = service.openRequest(one.body, one.headers);
    const reply = service.sealResponse(utf8("for one"), opened.replyKey);
    expectFailure(
      () => client.openResponse(reply.body, reply.headers, two.replyKey),
      DecryptFailure.tampered,
    );
    expectFailure(() => service.openRequest(reply.body, reply.headers), DecryptFailure.malformed);
    const padded = Buffer.concat([reply.body, Buffer.alloc(64)]);
    expectFailure(() => service.openRequest(padded, reply.headers), DecryptFailure.tampered);
    expectFailure(
      () => client.openResponse(one.body, one.headers, one.replyKey),
      DecryptFailure.tampered,
    );
  });

  it("refuses a response sealed in another suite than the request", () => {
    const sealed = client.sealRequest(utf8("x"), peer);
    const opened = service.openRequest(sealed.body, sealed.headers);
    const reply = service.sealResponse(utf8("y"), opened.replyKey);
    expectFailure(
      () => client.openResponse(reply.body, { [EncryptionHeader.suite]: "nacl" }, sealed.replyKey),
      DecryptFailure.unsupported,
    );
  });

  it("refuses requests older than maxAgeMs or dated too far in the future", () => {
    const sealed = client.sealRequest(utf8("x"), peer);
    clock.ms = now + 5000;
    try {
      expectFailure(
        () => service.openRequest(sealed.body, sealed.headers, { maxAgeMs: 1000 }),
        DecryptFailure.expired,
      );
      expect(text(service.openRequest(sealed.body, sealed.headers).plain)).toBe("x");
      clock.ms = now - 120_000;
      expectFailure(
        () => service.openRequest(sealed.body, sealed.headers, { maxAgeMs: 1000 }),
        DecryptFailure.expired,
      );
    } finally {
      clock.ms = now;
    }
  });

  it("refuses the suite where it is off or there is no key to open it", () => {
    const sealed = client.sealRequest(utf8("x"), peer);
    const naclOnly = createPayloadEncryptor({ keys: serviceKeys, suites: ["nacl"] });
    expectFailure(
      () => naclOnly.openRequest(sealed.body, sealed.headers),
      DecryptFailure.unsupported,
    );
    const keyless = createPayloadEncryptor();
    expectFailure(
      () => keyless.openRequest(sealed.body, sealed.headers),
      DecryptFailure.unsupported,
    );
  });

  it("keeps working through key rotation with previousKeys", () => {
    const oldService = createPayloadEncryptor({ keys: otherKeys });
    const sealed = client.sealRequest(utf8("old"), peerOf(oldService));
    const rotated = createPayloadEncryptor({ keys: serviceKeys, previousKeys: [otherKeys] });
    expect(rotated.publicKeys.native).toBe(service.publicKeys.native);
    const opened = rotated.openRequest(sealed.body, sealed.headers);
    expect(text(opened.plain)).toBe("old");
    const reply = rotated.sealResponse(utf8("back"), opened.replyKey);
    expect(text(client.openResponse(reply.body, reply.headers, sealed.replyKey))).toBe("back");
  });

  it("a client with keys sends from its own derived key; reply keys show only their suite", () => {
    const withKeys = createPayloadEncryptor({ keys: otherKeys });
    const sealed = withKeys.sealRequest(utf8("x"), peer);
    expect(Buffer.from(sealed.body.subarray(18, 50)).toString("base64")).toBe(
      withKeys.publicKeys.native,
    );
    expect(JSON.stringify(sealed.replyKey)).toBe(`{"suite":"${NATIVE}"}`);
    expect(inspect(sealed.replyKey)).not.toMatch(/key:|Nonce/);
  });
});
