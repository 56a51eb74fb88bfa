import { describe, expect, it } from "vitest";
import { createFernet, generateFernetKey, type FernetDecryptOptions } from "../src/index.ts";
import { expectFailure } from "./helpers.ts";

interface GenerateVector {
  token: string;
  now: string;
  iv: number[];
  src: string;
  secret: string;
}
interface VerifyVector {
  token: string;
  now: string;
  ttl_sec: number;
  src: string;
  secret: string;
}
interface InvalidVector {
  desc: string;
  token: string;
  now: string;
  ttl_sec: number;
  secret: string;
}

import { fixture } from "./helpers.ts";

const generate = fixture<GenerateVector[]>("fernet-spec/generate.json");
const verify = fixture<VerifyVector[]>("fernet-spec/verify.json");
const invalid = fixture<InvalidVector[]>("fernet-spec/invalid.json");

describe("Fernet spec vectors", () => {
  it.each(generate)("generate: reproduces $token", (v) => {
    const token = createFernet(v.secret).encrypt(v.src, {
      now: new Date(v.now),
      iv: Uint8Array.from(v.iv),
    });
    expect(token).toBe(v.token);
  });

  it.each(verify)("verify: decrypts $token", (v) => {
    const plain = createFernet(v.secret).decrypt(v.token, {
      ttlSec: v.ttl_sec,
      now: new Date(v.now),
    });
    expect(plain.toString("utf8")).toBe(v.src);
    // And without a ttl, as NuroPb Python decrypts.
    expect(createFernet(v.secret).decrypt(v.token).toString("utf8")).toBe(v.src);
  });

  const expectedReason: Record<string, string> = {
    "incorrect mac": "tampered",
    "too short": "malformed",
    "invalid base64": "malformed",
    "payload size not multiple of block size": "malformed",
    "payload padding error": "tampered",
    "far-future TS (unacceptable clock skew)": "expired",
    "expired TTL": "expired",
    "incorrect IV (causes padding error)": "tampered",
  };

  it("covers all eight invalid vectors", () => {
    expect(invalid.map((v) => v.desc).sort()).toEqual(Object.keys(expectedReason).sort());
  });

  it.each(invalid)("invalid: rejects '$desc' with its ttl", (v) => {
    const f = createFernet(v.secret);
    expectFailure(
      () => f.decrypt(v.token, { ttlSec: v.ttl_sec, now: new Date(v.now) }),
      expectedReason[v.desc] as "tampered",
    );
  });

  it.each(invalid.filter((v) => expectedReason[v.desc] !== "expired"))(
    "invalid: rejects '$desc' without a ttl too",
    (v) => {
      expectFailure(
        () => createFernet(v.secret).decrypt(v.token),
        expectedReason[v.desc] as "tampered",
      );
    },
  );

  it.each(invalid.filter((v) => expectedReason[v.desc] === "expired"))(
    "invalid: '$desc' is only a time failure (accepted without ttl, as Python NuroPb)",
    (v) => {
      expect(createFernet(v.secret).decrypt(v.token).length).toBe(0);
    },
  );
});

describe("Fernet", () => {
  it("round-trips bytes of every block-boundary length", () => {
    const f = createFernet(generateFernetKey());
    for (const n of [0, 1, 15, 16, 17, 31, 32, 33, 1000]) {
      const plain = Uint8Array.from({ length: n }, (_, i) => (i * 7) & 0xff);
      const token = f.encrypt(plain);
      expect(token.startsWith("gAAAAA")).toBe(true);
      expect(token.length % 4).toBe(0);
      expect(Uint8Array.from(f.decrypt(token))).toEqual(plain);
      expect(Uint8Array.from(f.decrypt(Buffer.from(token, "latin1")))).toEqual(plain);
    }
  });

  it("generates 44-character URL-safe keys that differ", () => {
    const a = generateFernetKey();
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}=$/);
    expect(generateFernetKey()).not.toBe(a);
  });

  it("refuses another key's token as tampered", () => {
    const token = createFernet(generateFernetKey()).encrypt("secret");
    expectFailure(() => createFernet(generateFernetKey()).decrypt(token), "tampered");
  });

  it("checks ttl and future skew only when a ttl is given", () => {
    const f = createFernet(generateFernetKey());
    const token = f.encrypt("x", { now: 1_000_000_000_000 });
    expect(f.decrypt(token, { ttlSec: 10, now: 1_000_000_010_000 }).toString()).toBe("x");
    expectFailure(() => f.decrypt(token, { ttlSec: 10, now: 1_000_000_011_000 }), "expired");
    expectFailure(
      () => f.decrypt(token, { ttlSec: 10, now: 1_000_000_000_000 - 61_000 }),
      "expired",
    );
    expect(f.decrypt(token, { ttlSec: 10, now: 1_000_000_000_000 - 60_000 }).toString()).toBe("x");
    expect(f.decrypt(token, { now: 0 }).toString()).toBe("x");
  });

  it("throws TypeError naming the option for a bad ttlSec, clockSkewSec or now", () => {
    const f = createFernet(generateFernetKey());
    const old = f.encrypt("x", { now: 1_000_000_000_000 });
    const now = 1_000_000_100_000; // the token is 100 s old
    const bad: [FernetDecryptOptions, RegExp][] = [
      [{ ttlSec: "10" as unknown as number, now }, /ttlSec must be a number >= 0 \(got "10"\)/],
      [{ ttlSec: NaN, now }, /ttlSec .*got NaN/],
      [{ ttlSec: -5, now }, /ttlSec .*got -5/],
      [{ ttlSec: 10, now: new Date("x") }, /now must be a valid Date .*invalid Date/],
      [{ ttlSec: 10, now: "2024" as unknown as number }, /now must be .*"2024"/],
      [{ ttlSec: 10, now: NaN }, /now must be/],
      [{ ttlSec: 10, now: Infinity }, /now must be/],
      [{ ttlSec: 1000, now, clockSkewSec: NaN }, /clockSkewSec must be a finite number/],
      [{ ttlSec: 1000, now, clockSkewSec: -1 }, /clockSkewSec .*got -1/],
      [{ ttlSec: 1000, now, clockSkewSec: Infinity }, /clockSkewSec .*got Infinity/],
      [{ ttlSec: 1000, now, clockSkewSec: "5" as unknown as number }, /clockSkewSec/],
      [{ now: new Date(NaN) }, /now must be/],
    ];
    for (const [options, message] of bad) {
      expect(() => f.decrypt(old, options), JSON.stringify(options)).toThrow(TypeError);
      expect(() => f.decrypt(old, options)).toThrow(message);
    }
    // Valid edges keep working: a Date, ttl 0 at the same second, an Infinity ttl (no limit).
    expect(f.decrypt(old, { ttlSec: 0, now: new Date(1_000_000_000_999) }).toString()).toBe("x");
    expect(f.decrypt(old, { ttlSec: Infinity, now }).toString()).toBe("x");
    expectFailure(() => f.decrypt(old, { ttlSec: 10, now: new Date(now) }), "expired");
    expectFailure(() => f.decrypt(old, { ttlSec: 10, now, clockSkewSec: 0 }), "expired");
  });

  it("throws TypeError for a token that is not a string or bytes", () => {
    const f = createFernet(generateFernetKey());
    for (const token of [null, undefined, 42, {}, [1, 2]]) {
      expect(() => f.decrypt(token as unknown as string)).toThrow(
        /token must be a string or a Uint8Array/,
      );
      expect(() => f.decrypt(token as unknown as string)).toThrow(TypeError);
    }
    const token = f.encrypt("bytes");
    expect(f.decrypt(new TextEncoder().encode(token)).toString()).toBe("bytes");
  });

  it("throws TypeError naming now for a bad encrypt time", () => {
    const f = createFernet(generateFernetKey());
    for (const now of ["abc", NaN, Infinity, new Date("x"), null]) {
      expect(() => f.encrypt("x", { now: now as unknown as number })).toThrow(
        /Fernet\.encrypt: now must be a valid Date or a finite number/,
      );
    }
    expect(() => f.encrypt("x", { now: -1000 })).toThrow(/timestamp out of range/);
  });

  it("rejects unpadded, non-canonical and wrong-version tokens", () => {
    const f = createFernet(generateFernetKey());
    const token = f.encrypt("hello");
    expectFailure(() => f.decrypt(token.replace(/=+$/, "")), "malformed");
    // Flip unused low bits of the last character before the padding: same bytes in a lax decoder.
    const at = token.length - 3;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const lax =
      token.slice(0, at) + alphabet[alphabet.indexOf(token.charAt(at)) ^ 1] + token.slice(at + 1);
    expect(Buffer.from(lax, "base64url")).toEqual(Buffer.from(token, "base64url"));
    expectFailure(() => f.decrypt(lax), "malformed");
    const raw = Buffer.from(token, "base64url");
    raw[0] = 0x81;
    expectFailure(
      () =>
        f.decrypt(
          raw.toString("base64url") + "=".repeat((4 - (raw.toString("base64url").length % 4)) % 4),
        ),
      "unsupported",
    );
  });

  it("throws TypeError for a bad key or IV, saying what was wrong", () => {
    expect(() => createFernet("short")).toThrow(/44 characters/);
    expect(() => createFernet(new Uint8Array(16))).toThrow(/32 bytes \(got 16\)/);
    expect(() => createFernet(generateFernetKey()).encrypt("x", { iv: new Uint8Array(8) })).toThrow(
      TypeError,
    );
  });
});
