import { NuropbMessageError } from "@nuropb/protocol";
import { describe, expect, it } from "vitest";
import {
  DecryptFailure,
  createPayloadEncryptor,
  createServiceKeys,
  decryptFailureReason,
} from "../src/index.ts";
import { B64, fixture, mutate, prng, text, utf8 } from "./helpers.ts";

interface Vectors {
  rsa: { private_key_pem: string; public_key_pem: string };
  cases: { request: { wire_body: string; plaintext_body: string }; fernet_key: string }[];
}

/** Asserts `open` throws a NuropbMessageError with a failure reason; returns the reason. */
function expectRefused(open: () => unknown, label: string): string {
  let thrown: unknown;
  try {
    open();
  } catch (err) {
    thrown = err;
  }
  if (!(thrown instanceof NuropbMessageError) || decryptFailureReason(thrown) === undefined) {
    throw new Error(`${label}: expected a NuropbMessageError with a reason, got ${String(thrown)}`);
  }
  return decryptFailureReason(thrown) ?? "";
}

const vectors = fixture<Vectors>("rsa-fernet.json");
const pythonKeys = createServiceKeys({ rsa: vectors.rsa.private_key_pem, nacl: true });
const service = createPayloadEncryptor({ keys: pythonKeys });
const client = createPayloadEncryptor();
const ROUNDS = 800;

describe("fuzz: every damaged ciphertext is refused with a typed error", () => {
  it("rsa-fernet requests (Python's and ours)", () => {
    const rand = prng(1);
    const bodies = [
      ...vectors.cases.map((c) => Buffer.from(c.request.wire_body, "latin1")),
      client.sealRequest(utf8('{"tag":"request"}'), { rsaPublicKeyPem: service.publicKeys.rsaPem })
        .body,
    ];
    const reasons = new Set<string>();
    for (let i = 0; i < ROUNDS; i++) {
      const body = bodies[i % bodies.length] ?? new Uint8Array();
      const damaged = mutate(body, rand);
      reasons.add(expectRefused(() => service.openRequest(damaged, {}), `rsa request #${i}`));
    }
    expect([...reasons].sort()).toEqual(
      expect.arrayContaining([
        DecryptFailure.malformed,
        DecryptFailure.tampered,
        DecryptFailure.wrongKey,
      ]),
    );
  });

  it("rsa-fernet responses (the key part is ignored by design, so only the rest is damaged)", () => {
    const rand = prng(2);
    const sealed = client.sealRequest(utf8("question"), {
      rsaPublicKeyPem: service.publicKeys.rsaPem,
    });
    const opened = service.openRequest(sealed.body, sealed.headers);
    const reply = service.sealResponse(utf8('{"tag":"response","result":1}'), opened.replyKey);
    expect(text(client.openResponse(reply.body, reply.headers, sealed.replyKey))).toContain(
      "response",
    );
    const dot = Buffer.from(reply.body).indexOf(0x2e);
    for (let i = 0; i < ROUNDS; i++) {
      const damaged = mutate(reply.body, rand, dot);
      expectRefused(
        () => client.openResponse(damaged, reply.headers, sealed.replyKey),
        `rsa response #${i}`,
      );
    }
  });

  it("nacl requests and responses", () => {
    const rand = prng(3);
    const peer = { naclPublicKey: service.publicKeys.nacl };
    const sealed = client.sealRequest(utf8('{"tag":"request"}'), peer);
    const opened = service.openRequest(sealed.body, sealed.headers);
    const reply = service.sealResponse(utf8('{"tag":"response"}'), opened.replyKey);
    for (let i = 0; i < ROUNDS; i++) {
      const req = mutate(sealed.body, rand);
      expectRefused(() => service.openRequest(req, sealed.headers), `nacl request #${i}`);
      const res = mutate(reply.body, rand);
      expectRefused(
        () => client.openResponse(res, reply.headers, sealed.replyKey),
        `nacl response #${i}`,
      );
    }
  });

  it("x25519-aes-gcm requests and responses", () => {
    const rand = prng(6);
    const peer = { nativePublicKey: service.publicKeys.native };
    const sealed = client.sealRequest(utf8('{"tag":"request"}'), peer);
    expect(sealed.replyKey.suite).toBe("x25519-aes-gcm");
    const opened = service.openRequest(sealed.body, sealed.headers);
    const reply = service.sealResponse(utf8('{"tag":"response"}'), opened.replyKey);
    for (let i = 0; i < ROUNDS; i++) {
      const req = mutate(sealed.body, rand);
      expectRefused(() => service.openRequest(req, sealed.headers), `native request #${i}`);
      const res = mutate(reply.body, rand);
      expectRefused(
        () => client.openResponse(res, reply.headers, sealed.replyKey),
        `native response #${i}`,
      );
    }
  });

  it("nacl headers", () => {
    const rand = prng(4);
    const sealed = client.sealRequest(utf8("x"), { naclPublicKey: service.publicKeys.nacl });
    const names = Object.keys(sealed.headers);
    const odd: unknown[] = [null, 42, {}, [], true, "", Buffer.from("nacm"), "nacl ", "rsa-fernet"];
    for (let i = 0; i < ROUNDS; i++) {
      const name = names[rand(names.length)] ?? "";
      const value = sealed.headers[name] ?? "";
      const replacement =
        rand(3) === 0
          ? odd[rand(odd.length)]
          : Buffer.from(mutate(Buffer.from(value, "latin1"), rand)).toString("latin1");
      const headers = { ...sealed.headers, [name]: replacement };
      if (replacement === undefined || headers[name] === value) continue;
      expectRefused(() => service.openRequest(sealed.body, headers), `nacl header ${name} #${i}`);
    }
  });

  it("a nacl sender key with its top bit flipped (X25519 ignores that bit) is refused", () => {
    const sealed = client.sealRequest(utf8("x"), { naclPublicKey: service.publicKeys.nacl });
    const key = Buffer.from(String(sealed.headers.nuropb_enc_pk), "base64");
    key[31] = (key[31] ?? 0) ^ 0x80;
    const headers = { ...sealed.headers, nuropb_enc_pk: key.toString("base64") };
    expectRefused(() => service.openRequest(sealed.body, headers), "top bit flipped");
  });

  it("random junk, with and without headers", () => {
    const rand = prng(5);
    const suites = [undefined, "nacl", "rsa-fernet", "x25519-aes-gcm", "other"];
    const replyKeys = [
      client.sealRequest(utf8("x"), { naclPublicKey: service.publicKeys.nacl }).replyKey,
      client.sealRequest(utf8("x"), { rsaPublicKeyPem: service.publicKeys.rsaPem }).replyKey,
      client.sealRequest(utf8("x"), { nativePublicKey: service.publicKeys.native }).replyKey,
    ];
    for (let i = 0; i < ROUNDS; i++) {
      const junk =
        rand(2) === 0
          ? Uint8Array.from({ length: rand(600) }, () => rand(256))
          : Buffer.from(
              Array.from({ length: rand(600) }, () => B64[rand(B64.length)]).join(""),
              "latin1",
            );
      const suite = suites[rand(suites.length)];
      const headers =
        suite === undefined
          ? {}
          : {
              nuropb_enc: suite,
              nuropb_enc_kid: pythonKeys.nacl?.kid,
              nuropb_enc_pk: service.publicKeys.nacl,
            };
      expectRefused(
        () => service.openRequest(junk, headers, { maxAgeMs: 1000 }),
        `junk request #${i}`,
      );
      const replyKey = replyKeys[i % replyKeys.length];
      if (replyKey === undefined) throw new Error("unreachable");
      expectRefused(() => client.openResponse(junk, headers, replyKey), `junk response #${i}`);
    }
    // Not even a Uint8Array: still a typed error, never a TypeError from inside.
    expectRefused(() => service.openRequest("text" as unknown as Uint8Array, {}), "string body");
    expectRefused(
      () => service.openRequest(utf8("x"), null as unknown as Record<string, unknown>),
      "null headers",
    );
  });
});
