// The symmetric cipher work of the suites, as self-contained functions: they run on the
// calling thread and, turned into source text, on the cipher threads (cipher-pool.ts). So they
// may use nothing but their parameters and the language itself: no imports, no module constants.
// (Code coverage tools that inject counters into function bodies would break the threads.)
import * as nodeCrypto from "node:crypto";
import nacl from "tweetnacl";

/** The parts of `tweetnacl.lowlevel` the kernels use (NaCl's C-style secretbox). */
export interface NaclLowLevel {
  crypto_secretbox(c: Uint8Array, m: Uint8Array, d: number, n: Uint8Array, k: Uint8Array): number;
  crypto_secretbox_open(
    m: Uint8Array,
    c: Uint8Array,
    d: number,
    n: Uint8Array,
    k: Uint8Array,
  ): number;
}

/** The parts of `node:crypto` the kernels use. */
export interface KernelCrypto {
  createCipheriv(
    algorithm: string,
    key: Uint8Array,
    iv: Uint8Array,
  ): {
    update(data: Uint8Array): Buffer;
    final(): Buffer;
    setAAD(aad: Uint8Array): unknown;
    getAuthTag(): Buffer;
  };
  createDecipheriv(
    algorithm: string,
    key: Uint8Array,
    iv: Uint8Array,
  ): {
    update(data: Uint8Array): Buffer;
    final(): Buffer;
    setAAD(aad: Uint8Array): unknown;
    setAuthTag(tag: Uint8Array): unknown;
  };
  createHmac(
    algorithm: string,
    key: Uint8Array,
  ): { update(data: Uint8Array): { digest(): Buffer } };
  timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean;
}

/** Outcome of {@link CipherKernels.fernetOpen} besides the plaintext. */
export type FernetOpenFailure = "mac" | "padding";

/** What {@link cipherKernels} returns. */
export interface CipherKernels {
  /**
   * XSalsa20-Poly1305: `c` (as long as `m`) receives 16 zero bytes ‖ tag ‖ ciphertext of `m`,
   * whose first 32 bytes must be zero (NaCl's ZEROBYTES).
   */
  box(c: Uint8Array, m: Uint8Array, nonce: Uint8Array, key: Uint8Array): void;
  /** Opens `c` (16 ignored bytes ‖ tag ‖ ciphertext) into `m` (as long); false when it fails to authenticate. */
  unbox(m: Uint8Array, c: Uint8Array, nonce: Uint8Array, key: Uint8Array): boolean;
  /**
   * Fernet: `token` holds version ‖ timestamp ‖ IV (25 bytes) and room for the AES-128-CBC
   * ciphertext of `plain` and the 32-byte HMAC; both are written. `key` is the 32-byte Fernet key.
   */
  fernetSeal(token: Uint8Array, plain: Uint8Array, key: Uint8Array): void;
  /** Fernet: checks the HMAC of the raw `token`, then decrypts it; a failure names its stage. */
  fernetOpen(token: Uint8Array, key: Uint8Array): Buffer | FernetOpenFailure;
  /**
   * AES-256-GCM (the `x25519-aes-gcm` suite): writes the ciphertext of `plain` and then the
   * 16-byte tag into `out` (`plain.length + 16` bytes). `nonce` is 12 bytes.
   */
  aeadSeal(
    out: Uint8Array,
    plain: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array,
    key: Uint8Array,
  ): void;
  /** Opens `sealed` (ciphertext ‖ 16-byte tag); null when it fails to authenticate. */
  aeadOpen(sealed: Uint8Array, nonce: Uint8Array, aad: Uint8Array, key: Uint8Array): Buffer | null;
}

/** The kernels over `nacl` and `crypto`. Self-contained: see the top of this file. */
export function cipherKernels(nacl: NaclLowLevel, crypto: KernelCrypto): CipherKernels {
  const { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } = crypto;
  return {
    box(c, m, nonce, key) {
      nacl.crypto_secretbox(c, m, m.length, nonce, key);
    },
    unbox(m, c, nonce, key) {
      return nacl.crypto_secretbox_open(m, c, c.length, nonce, key) === 0;
    },
    fernetSeal(token, plain, key) {
      const iv = token.subarray(9, 25);
      const cipher = createCipheriv("aes-128-cbc", key.subarray(16, 32), iv);
      const head = cipher.update(plain);
      token.set(head, 25);
      const tail = cipher.final();
      token.set(tail, 25 + head.length);
      const macAt = 25 + head.length + tail.length;
      const mac = createHmac("sha256", key.subarray(0, 16))
        .update(token.subarray(0, macAt))
        .digest();
      token.set(mac, macAt);
    },
    fernetOpen(token, key) {
      const macAt = token.length - 32;
      const mac = createHmac("sha256", key.subarray(0, 16))
        .update(token.subarray(0, macAt))
        .digest();
      if (!timingSafeEqual(mac, token.subarray(macAt))) return "mac";
      try {
        const decipher = createDecipheriv(
          "aes-128-cbc",
          key.subarray(16, 32),
          token.subarray(9, 25),
        );
        const head = decipher.update(token.subarray(25, macAt));
        const tail = decipher.final();
        return tail.length === 0 ? head : Buffer.concat([head, tail]);
      } catch {
        return "padding";
      }
    },
    aeadSeal(out, plain, nonce, aad, key) {
      const cipher = createCipheriv("aes-256-gcm", key, nonce);
      cipher.setAAD(aad);
      const head = cipher.update(plain);
      out.set(head, 0);
      const tail = cipher.final();
      out.set(tail, head.length);
      out.set(cipher.getAuthTag(), head.length + tail.length);
    },
    aeadOpen(sealed, nonce, aad, key) {
      const tagAt = sealed.length - 16;
      if (tagAt < 0) return null;
      try {
        const decipher = createDecipheriv("aes-256-gcm", key, nonce);
        decipher.setAAD(aad);
        decipher.setAuthTag(sealed.subarray(tagAt));
        const head = decipher.update(sealed.subarray(0, tagAt));
        const tail = decipher.final(); // throws when the tag does not match
        return tail.length === 0 ? head : Buffer.concat([head, tail]);
      } catch {
        return null;
      }
    },
  };
}

/** Op codes of {@link runKernelOp}. */
export const KernelOp = {
  box: 1,
  unbox: 2,
  fernetSeal: 3,
  fernetOpen: 4,
  aeadSeal: 5,
  aeadOpen: 6,
} as const;
/** Statuses of {@link runKernelOp}: done, failed authentication (MAC), bad padding, failed. */
export const KernelStatus = { ok: 0, mac: 1, padding: 2, error: 3 } as const;

/**
 * One op by code, as the cipher threads and the calling thread both run it: `a` and `b` are the
 * op's two inputs (box/unbox: nonce, message; fernetSeal: plaintext, framed token, completed in
 * place; fernetOpen: token, unused; aeadSeal/aeadOpen: nonce (12) ‖ associated data, plaintext
 * or ciphertext ‖ tag). Never throws: a failure is a status. Self-contained.
 */
export function runKernelOp(
  kernels: CipherKernels,
  code: number,
  key: Uint8Array,
  a: Uint8Array,
  b: Uint8Array,
): { status: number; out: Uint8Array } {
  const none = new Uint8Array(0);
  try {
    if (code === 1) {
      const out = new Uint8Array(b.length);
      kernels.box(out, b, a, key);
      return { status: 0, out };
    }
    if (code === 2) {
      const out = new Uint8Array(b.length);
      return kernels.unbox(out, b, a, key) ? { status: 0, out } : { status: 1, out: none };
    }
    if (code === 3) {
      kernels.fernetSeal(b, a, key);
      return { status: 0, out: b };
    }
    if (code === 4) {
      const opened = kernels.fernetOpen(a, key);
      if (typeof opened !== "string") return { status: 0, out: opened };
      return { status: opened === "mac" ? 1 : 2, out: none };
    }
    if (code === 5) {
      const out = new Uint8Array(b.length + 16);
      kernels.aeadSeal(out, b, a.subarray(0, 12), a.subarray(12), key);
      return { status: 0, out };
    }
    if (code === 6) {
      const opened = kernels.aeadOpen(b, a.subarray(0, 12), a.subarray(12), key);
      return opened === null ? { status: 1, out: none } : { status: 0, out: opened };
    }
  } catch {
    // Reported as a status below: the caller decides what a failed op means.
  }
  return { status: 3, out: none };
}

/** The kernels on this thread. */
export const KERNELS: CipherKernels = cipherKernels(
  (nacl as unknown as { readonly lowlevel: NaclLowLevel }).lowlevel,
  nodeCrypto,
);
