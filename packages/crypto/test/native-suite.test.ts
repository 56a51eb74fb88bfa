import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
} from "node:crypto";
import { createRequire } from "node:module";
import { inspect } from "node:util";
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
  CHACHA_AEAD,
  chooseChachaAead,
  knownAnswerFailure,
  nodeChachaAead,
  sodiumChachaAead,
  type ChachaAead,
  type SodiumAeadBinding,
} from "../src/chacha-aead.ts";
import {
  NativePair,
  generateNativeKeyPair,
  openNativeRequest,
  sealNativeRequest,
  useChachaAead,
  x25519PublicKey,
} from "../src/native-suite.ts";
import { fillRandom } from "../src/random.ts";
import { expectFailure, fixture, nativeVectorKey, text, utf8 } from "./helpers.ts";

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

  it("round-trips a request and its response with no header (version 3 names itself)", () => {
    const sealed = client.sealRequest(utf8('{"q":1}'), peer);
    expect(sealed.replyKey.suite).toBe(NATIVE);
    expect(sealed.headers).toEqual({});
    expect(sealed.body.length).toBe(62 + 7 + 16);
    expect(sealed.body[0]).toBe(3); // version 3: ChaCha20-Poly1305
    expect(sealed.body[1]).toBe(1); // request
    const opened = service.openRequest(sealed.body, sealed.headers, { maxAgeMs: 1000 });
    expect(text(opened.plain)).toBe('{"q":1}');
    const reply = service.sealResponse(utf8('{"a":2}'), opened.replyKey);
    expect(reply.headers).toEqual({});
    expect(reply.body.length).toBe(22 + 7 + 16);
    expect(reply.body[0]).toBe(3);
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

  it("matches the documented version-3 format: HKDF v3 key, ChaCha20-Poly1305, head as AAD", () => {
    const v = fixture<Vectors>("x25519-aes-gcm-v3-vectors.json");
    const s = createPayloadEncryptor({
      keys: { rsa: null, nacl: naclKeyPairFromSecretKey(v.serviceNaclSecretKey) },
    });
    const request = Buffer.from(v.requestBody, "hex");
    expect(request[0]).toBe(3);
    expect(v.requestHeaders).toEqual({});
    expect(text(s.openRequest(request, v.requestHeaders).plain)).toBe(v.requestPlain);
    // Rebuilt here with node:crypto alone: each body sealed again from its own nonce.
    const key = nativeVectorKey(v, "nuropb x25519-chacha20-poly1305 v3");
    expect(key).not.toEqual(nativeVectorKey(v, "nuropb x25519-aes-gcm v1"));
    const reseal = (body: Buffer, head: number, nonceAt: number, plain: string, extra: Buffer) => {
      const nonce = body.subarray(nonceAt, nonceAt + 12);
      const cipher = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
      cipher.setAAD(Buffer.concat([body.subarray(0, head), extra]), {
        plaintextLength: Buffer.byteLength(plain),
      });
      const sealed = Buffer.concat([cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return Buffer.concat([body.subarray(0, head), sealed]);
    };
    expect(reseal(request, 62, 50, v.requestPlain, Buffer.alloc(0))).toEqual(request);
    const response = Buffer.from(v.responseBody, "hex");
    expect(response[0]).toBe(3);
    expect(v.responseHeaders).toEqual({});
    const requestNonce = request.subarray(50, 62);
    expect(reseal(response, 22, 10, v.responsePlain, requestNonce)).toEqual(response);
    // And libsodium, called directly, seals the same bytes.
    const sodium = loadSodium();
    const out = Buffer.alloc(response.length - 22);
    const aad = Buffer.concat([response.subarray(0, 22), requestNonce]);
    const nonce = response.subarray(10, 22);
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
      out,
      utf8(v.responsePlain),
      aad,
      null,
      nonce,
      key,
    );
    expect(out).toEqual(response.subarray(22));
  });

  it("keeps a pair's keys private: inspect and JSON show only the key id", () => {
    const c = generateNativeKeyPair();
    const s = generateNativeKeyPair();
    const pair = new NativePair(
      c.privateKey,
      x25519PublicKey(s.publicKey),
      c.publicKey,
      s.publicKey,
    );
    expect(Object.keys(pair)).toEqual(["kid"]);
    expect(Object.keys(JSON.parse(JSON.stringify(pair)) as object)).toEqual(["kid"]);
    const shown = inspect(pair, { showHidden: true, depth: 10 });
    expect(shown).not.toMatch(/v1|v3|gcm|key:/i);
    // The pair still seals and opens: its keys are there, only out of sight.
    const back = new NativePair(
      s.privateKey,
      x25519PublicKey(c.publicKey),
      c.publicKey,
      s.publicKey,
    );
    const sealed = sealNativeRequest(utf8("hello"), pair, c.publicKey, now).body;
    expect(text(openNativeRequest(sealed, back))).toBe("hello");
  });

  it("opens messages out of order, and shared among instances", () => {
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

  it("opens requests of senders taking turns, each with its own pair, and binds each reply", () => {
    // The service remembers the pair of the last request: alternating senders (and a sender
    // whose key differs in its last byte only) must each find their own keys, never the last one.
    const service = createPayloadEncryptor({ keys: serviceKeys, peerCacheSize: 1 });
    const senders = [0, 1, 2].map(() => createPayloadEncryptor({ suites: [NATIVE] }));
    const servicePeer = peerOf(service);
    for (let round = 0; round < 3; round++) {
      for (const [i, sender] of [...senders.entries(), ...senders.entries()]) {
        const sealed = sender.sealRequest(utf8(`from ${i}`), servicePeer);
        const opened = service.openRequest(sealed.body, sealed.headers, { maxAgeMs: 60_000 });
        expect(text(opened.plain)).toBe(`from ${i}`);
        const reply = service.sealResponse(utf8(`to ${i}`), opened.replyKey);
        expect(text(sender.openResponse(reply.body, reply.headers, sealed.replyKey))).toBe(
          `to ${i}`,
        );
        // The sender key's last byte changed: a pair unknown to the service, that cannot open.
        const other = Uint8Array.from(sealed.body);
        other[49] = (other[49] ?? 0) ^ 0x01;
        expectFailure(() => service.openRequest(other, sealed.headers), DecryptFailure.tampered);
      }
    }
  });

  it("seals version 3 for every body size; a version-1 request gets a version-1 response", () => {
    for (const size of [0, 1024, 1025, 70_000]) {
      const sealed = client.sealRequest(new Uint8Array(size).fill(7), peer);
      expect(sealed.body[0]).toBe(3);
      expect(sealed.headers).toEqual({});
      const opened = service.openRequest(sealed.body, sealed.headers);
      expect(Buffer.from(opened.plain).equals(Buffer.alloc(size, 7))).toBe(true);
      const reply = service.sealResponse(new Uint8Array(size).fill(9), opened.replyKey);
      expect(reply.body[0]).toBe(3);
      expect(reply.headers).toEqual({});
      const back = client.openResponse(reply.body, reply.headers, sealed.replyKey);
      expect(Buffer.from(back).equals(Buffer.alloc(size, 9))).toBe(true);
    }
    // A version-1 request, as earlier builds seal it (the stored vector): its answer is sealed
    // as version 1 with its header, what that sender reads; checked here with node:crypto.
    const v = fixture<Vectors>("x25519-aes-gcm-vectors.json");
    const s = createPayloadEncryptor({
      keys: { rsa: null, nacl: naclKeyPairFromSecretKey(v.serviceNaclSecretKey) },
    });
    const request = Buffer.from(v.requestBody, "hex");
    const opened = s.openRequest(request, v.requestHeaders);
    for (const answer of [0, 5000]) {
      const reply = s.sealResponse(new Uint8Array(answer).fill(5), opened.replyKey);
      expect(reply.body[0]).toBe(1);
      expect(reply.headers).toEqual({ [EncryptionHeader.suite]: NATIVE });
      const body = Buffer.from(reply.body);
      const d = createDecipheriv(
        "aes-256-gcm",
        nativeVectorKey(v, "nuropb x25519-aes-gcm v1"),
        body.subarray(10, 22),
      );
      d.setAAD(Buffer.concat([body.subarray(0, 22), request.subarray(50, 62)]));
      d.setAuthTag(body.subarray(body.length - 16));
      const plain = Buffer.concat([d.update(body.subarray(22, body.length - 16)), d.final()]);
      expect(plain.equals(Buffer.alloc(answer, 5))).toBe(true);
    }
    // A version-3 request whose version byte says 1 is opened as version 1 and fails.
    const sealed = client.sealRequest(utf8("x"), peer);
    const relabelled = Buffer.from(sealed.body);
    relabelled[0] = 1;
    expectFailure(() => service.openRequest(relabelled, {}), DecryptFailure.tampered);
    // A response in another version than its request is refused before any cipher work.
    const opened3 = service.openRequest(sealed.body, sealed.headers);
    const reply3 = Buffer.from(service.sealResponse(utf8("r"), opened3.replyKey).body);
    reply3[0] = 1;
    expectFailure(
      () => client.openResponse(reply3, { [EncryptionHeader.suite]: NATIVE }, sealed.replyKey),
      DecryptFailure.malformed,
    );
  });

  it("without nuropb_enc, reads a binary body as x25519-aes-gcm and text as rsa-fernet", () => {
    const sealed = client.sealRequest(utf8("x"), peer);
    // The header is optional for version 3: named or not, it opens.
    const named = { [EncryptionHeader.suite]: NATIVE };
    expect(text(service.openRequest(sealed.body, named).plain)).toBe("x");
    expect(text(service.openRequest(sealed.body, {}).plain)).toBe("x");
    // An unknown binary version is refused as such, not read as Python's text format.
    const future = Buffer.from(sealed.body);
    for (const version of [0x00, 0x02, 0x04, 0x1f]) {
      future[0] = version;
      expectFailure(() => service.openRequest(future, {}), DecryptFailure.unsupported);
    }
    // A participant without the suite refuses it; a text body still goes to rsa-fernet.
    const rsaOnly = createPayloadEncryptor({ keys: serviceKeys, suites: ["rsa-fernet"] });
    expectFailure(() => rsaOnly.openRequest(sealed.body, {}), DecryptFailure.unsupported);
    const text64 = expectFailure(
      () => service.openRequest(utf8("QUJD.QUJD"), {}),
      DecryptFailure.unsupported,
    );
    expect(text64.description).toMatch(/RSA/); // went to rsa-fernet, which has no key here
    // A nacl body stripped of its headers is not read as this suite: the error says what it is.
    const nacl = createPayloadEncryptor({ suites: ["nacl"], now: () => clock.ms });
    const naclSealed = nacl.sealRequest(utf8("x"), peer);
    expect(text(service.openRequest(naclSealed.body, naclSealed.headers).plain)).toBe("x");
    const stripped = expectFailure(
      () => service.openRequest(naclSealed.body, {}),
      DecryptFailure.unsupported,
    );
    expect(stripped.description).toMatch(/a nacl body sent without its header\?/);
    expect(stripped.description).not.toMatch(/x25519-aes-gcm/);
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

/** sodium-native, loaded here as the package loads it. */
function loadSodium(): SodiumAeadBinding {
  return createRequire(import.meta.url)("sodium-native") as SodiumAeadBinding;
}

describe("x25519-aes-gcm: ChaCha20-Poly1305 backends (libsodium, node:crypto)", () => {
  const sodium = sodiumChachaAead(loadSodium());
  const backends: readonly ChachaAead[] = [sodium, nodeChachaAead];

  it("runs libsodium in this process, since sodium-native loads here", () => {
    expect(CHACHA_AEAD.name).toBe("libsodium");
  });

  it("falls back to node:crypto when sodium-native does not load, without throwing", () => {
    const missing = () => {
      throw new Error("Cannot find module 'sodium-native'\nRequire stack: ...");
    };
    expect(chooseChachaAead(missing)).toBe(nodeChachaAead);
    expect(chooseChachaAead(() => ({}))).toBe(nodeChachaAead);
    expect(chooseChachaAead(() => null)).toBe(nodeChachaAead);
    expect(chooseChachaAead(loadSodium).name).toBe("libsodium");
  });

  it("takes libsodium only once it passes RFC 8439's known answers; checks what it returns", () => {
    const real = loadSodium();
    // Fails without throwing: writes nothing, returns -1 (or says success for a forgery).
    const silent = {
      crypto_aead_chacha20poly1305_ietf_encrypt: () => -1,
      crypto_aead_chacha20poly1305_ietf_decrypt: () => -1,
    };
    const opensAnything = {
      crypto_aead_chacha20poly1305_ietf_encrypt: real.crypto_aead_chacha20poly1305_ietf_encrypt,
      // Opens what authenticates, and "opens" a forgery too (success without the bytes).
      crypto_aead_chacha20poly1305_ietf_decrypt: (
        ...args: Parameters<SodiumAeadBinding["crypto_aead_chacha20poly1305_ietf_decrypt"]>
      ) => {
        try {
          return real.crypto_aead_chacha20poly1305_ietf_decrypt(...args);
        } catch {
          return args[0].length;
        }
      },
    };
    expect(knownAnswerFailure(sodiumChachaAead(silent))).toBe("libsodium wrote -1 bytes, not 130");
    expect(chooseChachaAead(() => silent)).toBe(nodeChachaAead);
    expect(knownAnswerFailure(sodiumChachaAead(opensAnything))).toBe("opens a forged tag");
    expect(chooseChachaAead(() => opensAnything)).toBe(nodeChachaAead);
    expect(knownAnswerFailure(sodium)).toBeUndefined();
    expect(knownAnswerFailure(nodeChachaAead)).toBeUndefined();
    // A seal whose byte count is wrong leaves zeros, never heap, and throws.
    const out = Buffer.alloc(20, 0xaa);
    expect(() =>
      sodiumChachaAead(silent).seal(
        out,
        utf8("abcd"),
        new Uint8Array(12),
        utf8(""),
        new Uint8Array(32),
      ),
    ).toThrow("libsodium wrote -1 bytes");
    expect(out.equals(Buffer.alloc(20))).toBe(true);
    // A binding that writes plaintext and then fails, by throwing or by its count, leaves
    // nothing of it in the buffer it was handed.
    const given: Uint8Array[] = [];
    const writesThen = (fail: () => number) => ({
      ...opensAnything,
      crypto_aead_chacha20poly1305_ietf_decrypt: (m: Uint8Array) => {
        given.push(m);
        m.fill(0x55);
        return fail();
      },
    });
    for (const fail of [
      () => {
        throw new Error("could not verify data");
      },
      () => 3,
    ]) {
      const aead = sodiumChachaAead(writesThen(fail));
      expect(aead.open(new Uint8Array(40), new Uint8Array(12), utf8(""), new Uint8Array(32))).toBe(
        null,
      );
    }
    expect(given).toHaveLength(2);
    for (const m of given) expect(Buffer.from(m).equals(Buffer.alloc(24))).toBe(true);
    // An open that "succeeds" with the wrong length is a refusal.
    const short = { ...opensAnything, crypto_aead_chacha20poly1305_ietf_decrypt: () => 0 };
    expect(
      sodiumChachaAead(short).open(
        new Uint8Array(20),
        new Uint8Array(12),
        utf8(""),
        new Uint8Array(32),
      ),
    ).toBeNull();
  });

  it("hands out pooled random bytes at most a pool at a time", () => {
    expect(() => fillRandom(new Uint8Array(5000), 0, 5000)).toThrow(RangeError);
    // Never past the target's end, short (byte by byte) or long (copied).
    expect(() => fillRandom(new Uint8Array(12), 1, 12)).toThrow(RangeError);
    expect(() => fillRandom(new Uint8Array(100), 50, 51)).toThrow(RangeError);
    expect(() => fillRandom(new Uint8Array(12), -1, 4)).toThrow(RangeError);
    const long = new Uint8Array(100);
    fillRandom(long, 36, 64);
    expect(long.subarray(0, 36).every((x) => x === 0)).toBe(true);
    expect(long.subarray(36).some((x) => x !== 0)).toBe(true);
    const a = new Uint8Array(16);
    const b = new Uint8Array(16);
    fillRandom(a, 0, 16);
    fillRandom(b, 0, 16);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
  });

  it("both compute RFC 8439's AEAD test vector (§2.8.2)", () => {
    const key = Buffer.from(
      "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
      "hex",
    );
    const nonce = Buffer.from("070000004041424344454647", "hex");
    const aad = Buffer.from("50515253c0c1c2c3c4c5c6c7", "hex");
    const plain = utf8(
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
    );
    for (const backend of backends) {
      const out = Buffer.alloc(plain.length + 16);
      backend.seal(out, plain, nonce, aad, key);
      expect(out.toString("hex", 0, 16), backend.name).toBe("d31a8d34648e60db7b86afbc53ef7ec2");
      expect(out.toString("hex", plain.length), backend.name).toBe(
        "1ae10b594f09e26a7e902ecbd0600691",
      );
      expect(text(backend.open(out, nonce, aad, key) ?? new Uint8Array(0))).toBe(text(plain));
    }
  });

  it("both give the same bytes for every length, open each other's, and refuse forgeries", () => {
    for (const length of [0, 1, 15, 16, 17, 63, 64, 65, 300, 4097]) {
      const key = Buffer.alloc(32, length + 1);
      const nonce = Buffer.alloc(12, length + 2);
      const aad = Buffer.alloc(length % 40, 3);
      const plain = Buffer.alloc(length, 4);
      const [a, b] = backends.map((backend) => {
        const out = Buffer.alloc(length + 16);
        backend.seal(out, plain, nonce, aad, key);
        return out;
      });
      expect(a).toEqual(b);
      for (const backend of backends) {
        expect(backend.open(a!, nonce, aad, key)?.equals(plain), backend.name).toBe(true);
        expect(backend.open(flip(a!, length), nonce, aad, key), backend.name).toBe(null);
        expect(backend.open(a!, nonce, Buffer.concat([aad, Buffer.of(0)]), key)).toBe(null);
        expect(backend.open(a!.subarray(0, length + 15), nonce, aad, key)).toBe(null);
        expect(backend.open(a!.subarray(0, 15), nonce, aad, key)).toBe(null);
      }
    }
  });

  for (const backend of backends) {
    it(`round-trips through the encryptors on ${backend.name}, and across backends`, () => {
      const service = createPayloadEncryptor({ keys: serviceKeys });
      const client = createPayloadEncryptor();
      const other = backends.find((x) => x !== backend)!;
      const before = useChachaAead(backend);
      try {
        const sealed = client.sealRequest(utf8(`{"on":"${backend.name}"}`), peerOf(service));
        expect(sealed.body[0]).toBe(3);
        const opened = service.openRequest(sealed.body, sealed.headers);
        expect(text(opened.plain)).toBe(`{"on":"${backend.name}"}`);
        const reply = service.sealResponse(utf8("back"), opened.replyKey);
        expect(text(client.openResponse(reply.body, reply.headers, sealed.replyKey))).toBe("back");
        expectFailure(
          () => service.openRequest(flip(sealed.body, 70), sealed.headers),
          DecryptFailure.tampered,
        );
        // Sealed on this backend, opened on the other: the same AEAD.
        useChachaAead(other);
        expect(text(service.openRequest(sealed.body, sealed.headers).plain)).toBe(
          `{"on":"${backend.name}"}`,
        );
        expect(text(client.openResponse(reply.body, reply.headers, sealed.replyKey))).toBe("back");
      } finally {
        useChachaAead(before);
      }
    });
  }
});
