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
      encrypt(out, plain, aad, null, nonce, key);
    },
    open(sealed: Uint8Array, nonce: Uint8Array, aad: Uint8Array, key: Uint8Array) {
      if (sealed.length < CHACHA_TAG_BYTES) return null;
      const plain = Buffer.allocUnsafe(sealed.length - CHACHA_TAG_BYTES);
      try {
        decrypt(plain, null, sealed, aad, nonce, key);
      } catch {
        return null; // libsodium leaves nothing of a forgery in `plain`
      }
      return plain;
    },
  } as const);
}

const debug = debuglog("nuropb-crypto");

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
      return sodiumChachaAead(sodium as SodiumAeadBinding);
    }
    why = "it has no crypto_aead_chacha20poly1305_ietf functions";
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
