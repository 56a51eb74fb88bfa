import { createPrivateKey, createPublicKey, diffieHellman, hkdfSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { NuropbMessageError } from "@nuropb/protocol";
import { expect } from "vitest";
import { decryptFailureReason, type DecryptFailure } from "../src/index.ts";

/** Reads a JSON fixture from test/fixtures. */
export function fixture<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), "utf8")) as T;
}

/** Runs `fn` and returns the NuropbMessageError it must throw. */
export function catchMessageError(fn: () => unknown): NuropbMessageError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(NuropbMessageError);
    return err as NuropbMessageError;
  }
  throw new Error("expected a NuropbMessageError, nothing was thrown");
}

/** Asserts `fn` throws a NuropbMessageError with the given reason; returns it. */
export function expectFailure(fn: () => unknown, reason: DecryptFailure): NuropbMessageError {
  const err = catchMessageError(fn);
  expect(decryptFailureReason(err), err.description).toBe(reason);
  expect(err.description.length).toBeGreaterThan(10);
  return err;
}

export const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
export const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

/** Deterministic PRNG (mulberry32) so a failure can be replayed. */
export function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

/** Base64 characters and the rsa-fernet body's dot: plausible replacements in text bodies. */
export const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=.";

/** One random change to `body` at or after `from`; never returns the same bytes. */
export function mutate(body: Uint8Array, rand: (n: number) => number, from = 0): Uint8Array {
  for (;;) {
    const at = from + rand(body.length - from);
    let out: Uint8Array;
    switch (rand(6)) {
      case 0: {
        out = Uint8Array.from(body);
        out[at] = (out[at] ?? 0) ^ (1 << rand(8));
        break;
      }
      case 1: {
        // A plausible character swap, for the base64 text bodies.
        out = Uint8Array.from(body);
        out[at] = B64.charCodeAt(rand(B64.length));
        break;
      }
      case 2:
        out = body.subarray(0, Math.max(from, at)); // truncate
        break;
      case 3:
        out = Buffer.concat([body.subarray(0, at), body.subarray(at + 1 + rand(4))]); // delete
        break;
      case 4:
        out = Buffer.concat([
          body.subarray(0, at),
          Uint8Array.of(B64.charCodeAt(rand(B64.length))),
          body.subarray(at),
        ]);
        break;
      default:
        out = Buffer.concat([body, Uint8Array.from({ length: 1 + rand(8) }, () => rand(256))]); // extend
    }
    if (Buffer.compare(Buffer.from(out), Buffer.from(body)) !== 0) return out;
  }
}

/** What the x25519-aes-gcm vector files share: the two participants' keys. */
export interface NativeVectorKeys {
  serviceNaclSecretKey: string;
  serviceNativePublicKey: string;
  clientNativePublicKey: string;
}

/**
 * The AEAD key of an x25519-aes-gcm vector file's client → service pair under an HKDF salt
 * ("nuropb x25519-aes-gcm v1", "nuropb x25519-chacha20-poly1305 v3"), derived with node:crypto
 * alone, independently of the package.
 */
export function nativeVectorKey(v: NativeVectorKeys, salt: string): Buffer {
  const secret = Buffer.from(
    hkdfSync(
      "sha256",
      Buffer.from(v.serviceNaclSecretKey, "base64"),
      Buffer.from("nuropb x25519-aes-gcm v1"),
      Buffer.from("nuropb x25519-aes-gcm static key v1"),
      32,
    ),
  );
  const der = Buffer.concat([Buffer.from("302e020100300506032b656e04220420", "hex"), secret]);
  const clientPublic = Buffer.from(v.clientNativePublicKey, "base64");
  const shared = diffieHellman({
    privateKey: createPrivateKey({ key: der, format: "der", type: "pkcs8" }),
    publicKey: createPublicKey({
      key: { kty: "OKP", crv: "X25519", x: clientPublic.toString("base64url") },
      format: "jwk",
    }),
  });
  const info = Buffer.concat([clientPublic, Buffer.from(v.serviceNativePublicKey, "base64")]);
  return Buffer.from(hkdfSync("sha256", shared, Buffer.from(salt), info, 32));
}
