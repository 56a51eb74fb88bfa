// ChaCha20-Poly1305 of RFC 8439 (the IETF variant: 32-byte key, 12-byte nonce, 16-byte tag), the
// AEAD of the native suite's envelope version 3. Two backends compute the same bytes:
// - libsodium through sodium-native (N-API prebuilds in its npm package): ~0.9 µs to seal 300 B,
//   no object per message;
// - node:crypto's `chacha20-poly1305` (OpenSSL), used when sodium-native does not load (a
//   platform without a prebuild): a cipher object per message, ~3-5 µs.
// Which one runs changes no byte on the wire, only the cost.
import { createCipheriv, createDecipheriv } from "node:crypto";
import { createRequire } from "node:module";
import { debuglog } from "node:util";

/** Length of the tag after the ciphertext. */
export const CHACHA_TAG_BYTES = 16;

/** One implementation of ChaCha20-Poly1305 (IETF). */
export interface ChachaAead {
  readonly name: "libsodium" | "node:crypto";
  /** Writes the ciphertext of `plain` and then its tag into `out` (`plain.length + 16` bytes). */
  seal(
    out: Uint8Array,
    plain: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array,
    key: Uint8Array,
  ): void;
  /** Opens `sealed` (ciphertext ‖ tag); null when it does not authenticate. */
  open(sealed: Uint8Array, nonce: Uint8Array, aad: Uint8Array, key: Uint8Array): Buffer | null;
}

/** The few functions of sodium-native used here (its own typings describe an older major). */
export interface SodiumAeadBinding {
  crypto_aead_chacha20poly1305_ietf_encrypt(
    c: Uint8Array,
    m: Uint8Array,
    ad: Uint8Array | null,
    nsec: null,
    npub: Uint8Array,
    k: Uint8Array,
  ): number;
  /** @throws Error when the tag does not match. */
  crypto_aead_chacha20poly1305_ietf_decrypt(
    m: Uint8Array,
    nsec: null,
    c: Uint8Array,
    ad: Uint8Array | null,
    npub: Uint8Array,
    k: Uint8Array,
  ): number;
}

/** ChaCha20-Poly1305 of node:crypto (OpenSSL). */
export const nodeChachaAead: ChachaAead = Object.freeze({
  name: "node:crypto",
  seal(out: Uint8Array, plain: Uint8Array, nonce: Uint8Array, aad: Uint8Array, key: Uint8Array) {
    const cipher = createCipheriv("chacha20-poly1305", key, nonce, {
      authTagLength: CHACHA_TAG_BYTES,
    });
    cipher.setAAD(aad, { plaintextLength: plain.length });
    const head = cipher.update(plain);
    out.set(head, 0);
    const tail = cipher.final();
    out.set(tail, head.length);
    out.set(cipher.getAuthTag(), head.length + tail.length);
  },
  open(sealed: Uint8Array, nonce: Uint8Array, aad: Uint8Array, key: Uint8Array) {
    const tagAt = sealed.length - CHACHA_TAG_BYTES;
    if (tagAt < 0) return null;
    try {
      const decipher = createDecipheriv("chacha20-poly1305", key, nonce, {
        authTagLength: CHACHA_TAG_BYTES,
      });
      decipher.setAAD(aad, { plaintextLength: tagAt });
      decipher.setAuthTag(sealed.subarray(tagAt));
      const head = decipher.update(sealed.subarray(0, tagAt));
      const tail = decipher.final(); // throws when the tag does not match
      return tail.length === 0 ? head : Buffer.concat([head, tail]);
    } catch {
      return null;
    }
  },
});

/** ChaCha20-Poly1305 of libsodium, through a loaded sodium-native. */
export function sodiumChachaAead(sodium: SodiumAeadBinding): ChachaAead {
  const encrypt = sodium.crypto_aead_chacha20poly1305_ietf_encrypt.bind(sodium);
  const decrypt = sodium.crypto_aead_chacha20poly1305_ietf_decrypt.bind(sodium);
  return Object.freeze({
    name: "libsodium",
    seal(out: Uint8Array, plain: Uint8Array, nonce: Uint8Array, aad: Uint8Array, key: Uint8Array) {
      // sodium-native returns the bytes written (and throws on failure); anything else and
      // `out` may hold what the heap held: nothing of it may leave.
      const n = encrypt(out, plain, aad, null, nonce, key);
      if (n !== plain.length + CHACHA_TAG_BYTES) {
        out.fill(0);
        throw new Error(`libsodium wrote ${String(n)} bytes, not ${String(out.length)}`);
      }
    },
    open(sealed: Uint8Array, nonce: Uint8Array, aad: Uint8Array, key: Uint8Array) {
      if (sealed.length < CHACHA_TAG_BYTES) return null;
      // From Node's pool, as every small Buffer (a zeroed Buffer.alloc is an ArrayBuffer of its
      // own per message, which the collector tracks): libsodium checks the tag before it writes
      // and fills all of `plain` when it opens. On any failure the bytes are wiped before `plain`
      // is dropped, so whatever the pool held never leaves, even from a binding that "fails"
      // without throwing.
      const plain = Buffer.allocUnsafe(sealed.length - CHACHA_TAG_BYTES);
      let n: number;
      try {
        n = decrypt(plain, null, sealed, aad, nonce, key);
      } catch {
        plain.fill(0);
        return null; // libsodium leaves nothing of a forgery in `plain`
      }
      if (n === plain.length) return plain;
      plain.fill(0);
      return null;
    },
  } as const);
}

const debug = debuglog("nuropb-crypto");

const hex = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ""), "hex");
/** RFC 8439 §2.8.2, the AEAD test vector. */
const KAT = {
  key: hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"),
  nonce: hex("070000004041424344454647"),
  aad: hex("50515253c0c1c2c3c4c5c6c7"),
  plain: Buffer.from(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
    "latin1",
  ),
  tag: hex("1ae10b594f09e26a7e902ecbd0600691"),
};

/**
 * What is wrong with `aead` against RFC 8439's vector — the tag of its seal, its opening, and
 * its refusal of a flipped tag — or undefined when it passes.
 */
export function knownAnswerFailure(aead: ChachaAead): string | undefined {
  try {
    const out = new Uint8Array(KAT.plain.length + CHACHA_TAG_BYTES);
    aead.seal(out, KAT.plain, KAT.nonce, KAT.aad, KAT.key);
    if (!KAT.tag.equals(out.subarray(KAT.plain.length))) return "wrong tag";
    const opened = aead.open(out, KAT.nonce, KAT.aad, KAT.key);
    if (opened === null || !KAT.plain.equals(opened)) return "does not open its own seal";
    out[out.length - 1] = (out[out.length - 1] as number) ^ 1;
    if (aead.open(out, KAT.nonce, KAT.aad, KAT.key) !== null) return "opens a forged tag";
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/**
 * The backend: libsodium when `load` (sodium-native's loader) gives a binding with the AEAD,
 * node:crypto otherwise, with one debug line (NODE_DEBUG=nuropb-crypto) saying why. Never throws.
 */
export function chooseChachaAead(load: () => unknown): ChachaAead {
  let why: string;
  try {
    const sodium = load() as Partial<SodiumAeadBinding> | null | undefined;
    if (
      typeof sodium?.crypto_aead_chacha20poly1305_ietf_encrypt === "function" &&
      typeof sodium.crypto_aead_chacha20poly1305_ietf_decrypt === "function"
    ) {
      const aead = sodiumChachaAead(sodium as SodiumAeadBinding);
      const failed = knownAnswerFailure(aead);
      if (failed === undefined) return aead;
      why = `it failed the RFC 8439 known-answer test (${failed})`;
    } else why = "it has no crypto_aead_chacha20poly1305_ietf functions";
  } catch (err) {
    why = err instanceof Error ? (err.message.split("\n")[0] ?? "") : String(err);
  }
  debug("sodium-native not loaded (%s): ChaCha20-Poly1305 runs on node:crypto", why);
  return nodeChachaAead;
}

/** The backend of this process: libsodium if sodium-native loads here. */
export const CHACHA_AEAD: ChachaAead = chooseChachaAead(() =>
  createRequire(import.meta.url)("sodium-native"),
);
