import {
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
} from "node:crypto";
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

  it("round-trips a request and its response with one header, nuropb_enc", () => {
    const sealed = client.sealRequest(utf8('{"q":1}'), peer);
    expect(sealed.replyKey.suite).toBe(NATIVE);
    expect(sealed.headers).toEqual({ [EncryptionHeader.suite]: NATIVE });
    expect(sealed.body.length).toBe(62 + 7 + 16);
    expect(sealed.body[0]).toBe(1); // version
    expect(sealed.body[1]).toBe(1); // request
    const opened = service.openRequest(sealed.body, sealed.headers, { maxAgeMs: 1000 });
    expect(text(opened.plain)).toBe('{"q":1}');
    const reply = service.sealResponse(utf8('{"a":2}'), opened.replyKey);
    expect(reply.headers).toEqual({ [EncryptionHeader.suite]: NATIVE });
    expect(reply.body.length).toBe(22 + 7 + 16);
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

  it("uses a fresh nonce for every message", () => {
    const nonces = new Set<string>();
    const n = 5000;
    for (let i = 0; i < n; i++) {
      const sealed = client.sealRequest(utf8("same"), peer);
      nonces.add(Buffer.from(sealed.body.subarray(50, 62)).toString("hex"));
      if (i % 10 === 0) {
        const opened = service.openRequest(sealed.body, sealed.headers);
        const reply = service.sealResponse(utf8("same"), opened.replyKey);
        nonces.add(Buffer.from(reply.body.subarray(10, 22)).toString("hex"));
      }
    }
    expect(nonces.size).toBe(n + n / 10);
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
