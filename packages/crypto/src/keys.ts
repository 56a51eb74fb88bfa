import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";
import nacl from "tweetnacl";
import { decodeBase64Strict, toBuffer } from "./base64.ts";

/** Smallest RSA modulus accepted, in bits (OAEP-SHA256 of a 44-byte key needs at least 880). */
export const MIN_RSA_BITS = 1024;
/** Size of an RSA key this package generates, in bits (as every Python NuroPb example). */
export const DEFAULT_RSA_BITS = 2048;

/** An RSA key pair for the `rsa-fernet` suite. */
export interface RsaKeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** The public key as PEM SubjectPublicKeyInfo, exactly as `nuropb_describe` announces it. */
  readonly publicKeyPem: string;
  /** Modulus size in bits. */
  readonly modulusBits: number;
}

/** An X25519 key pair for the `nacl` suite. */
export interface NaclKeyPair {
  /** 32-byte public key. */
  readonly publicKey: Uint8Array;
  /** 32-byte secret key. Never log it. */
  readonly secretKey: Uint8Array;
  /** Key id: the first 16 hex characters of SHA-256 of the public key. */
  readonly kid: string;
}

/** The local participant's key material. Either part may be absent. */
export interface ServiceKeys {
  /** RSA key pair: lets Python peers (and `rsa-fernet` senders) encrypt to this participant. */
  readonly rsa: RsaKeyPair | null;
  /** X25519 key pair: lets `nacl` senders encrypt to this participant. */
  readonly nacl: NaclKeyPair | null;
}

/** Options of {@link createServiceKeys}. */
export interface CreateServiceKeysOptions {
  /**
   * `true` generates an RSA-2048 key; a string is a PEM private key (PKCS#8 or PKCS#1); a
   * `KeyObject` is used as is; `false` or absent: no RSA key.
   */
  readonly rsa?: boolean | string | KeyObject;
  /**
   * `true` generates an X25519 key pair; a string is the base64 32-byte secret key; bytes are the
   * secret key; `false` or absent: no nacl key.
   */
  readonly nacl?: boolean | string | Uint8Array;
  /** Passphrase of an encrypted PEM private key. */
  readonly passphrase?: string;
}

/**
 * Builds the local key material. Called without options it generates both an RSA-2048 and a
 * nacl key pair; with options, only the parts named there exist.
 *
 * Instances of one service share a queue, so they must share keys: generate once and store them
 * with {@link loadOrCreateKeyFile}, rather than generating per process.
 * @throws TypeError when a given key is not a usable key of the right kind and size.
 * @example
 * ```ts
 * const keys = createServiceKeys(); // both suites, fresh keys
 * const pythonCompatible = createServiceKeys({ rsa: pemFromDisk });
 * ```
 */
export function createServiceKeys(
  options: CreateServiceKeysOptions = { rsa: true, nacl: true },
): ServiceKeys {
  const passphrase = options.passphrase === undefined ? {} : { passphrase: options.passphrase };
  let rsa: RsaKeyPair | null = null;
  if (options.rsa === true) rsa = generateRsaKeyPair();
  else if (typeof options.rsa === "string") rsa = loadRsaKeyPair(options.rsa, passphrase);
  else if (typeof options.rsa === "object" && options.rsa !== null)
    rsa = rsaKeyPairFromPrivateKey(options.rsa);
  else if (options.rsa !== undefined && options.rsa !== false) {
    throw new TypeError(
      `createServiceKeys: rsa must be true, false, a PEM string or a KeyObject (got ${options.rsa === null ? "null" : typeof options.rsa})`,
    );
  }
  let naclPair: NaclKeyPair | null = null;
  if (options.nacl === true) naclPair = generateNaclKeyPair();
  else if (typeof options.nacl === "string" || options.nacl instanceof Uint8Array) {
    naclPair = naclKeyPairFromSecretKey(options.nacl);
  }
  return Object.freeze({ rsa, nacl: naclPair });
}

/**
 * Generates an RSA key pair, public exponent 65537.
 * @param modulusBits key size in bits. @defaultValue 2048
 * @throws TypeError when `modulusBits` is below 1024 or not a multiple of 8.
 */
export function generateRsaKeyPair(modulusBits: number = DEFAULT_RSA_BITS): RsaKeyPair {
  if (!Number.isInteger(modulusBits) || modulusBits < MIN_RSA_BITS || modulusBits % 8 !== 0) {
    throw new TypeError(
      `RSA key size must be a multiple of 8 of at least ${MIN_RSA_BITS} bits (got ${modulusBits})`,
    );
  }
  const { privateKey } = generateKeyPairSync("rsa", {
    modulusLength: modulusBits,
    publicExponent: 65537,
  });
  return rsaKeyPairFromPrivateKey(privateKey);
}

/**
 * Loads an RSA private key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE
 * KEY`, the "TraditionalOpenSSL" format Python examples store) or an encrypted PKCS#8 key with
 * `passphrase`.
 * @throws TypeError saying what was wrong (a public key, another key type, damaged PEM, too small).
 */
export function loadRsaKeyPair(
  pem: string,
  options: { readonly passphrase?: string } = {},
): RsaKeyPair {
  if (typeof pem !== "string" || !pem.includes("-----BEGIN ")) {
    throw new TypeError(
      "RSA private key must be PEM text (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)",
    );
  }
  const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(pem)?.[1] ?? "";
  if (label.includes("PUBLIC KEY") || label === "CERTIFICATE") {
    throw new TypeError(`Expected an RSA private key but the PEM holds a ${label}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(
      options.passphrase === undefined
        ? { key: pem, format: "pem" }
        : { key: pem, format: "pem", passphrase: options.passphrase },
    );
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new TypeError(
      `Cannot read the RSA private key PEM (${label === "" ? "no PEM label" : label}): ${why}`,
      { cause: err },
    );
  }
  return rsaKeyPairFromPrivateKey(key);
}

/**
 * The RSA key pair of a private `KeyObject`.
 * @throws TypeError when the key is not a private RSA key of at least 1024 bits.
 */
export function rsaKeyPairFromPrivateKey(privateKey: KeyObject): RsaKeyPair {
  if (privateKey.type !== "private" || privateKey.asymmetricKeyType !== "rsa") {
    throw new TypeError(
      `Expected a private RSA key, got a ${privateKey.type} ${privateKey.asymmetricKeyType ?? "symmetric"} key`,
    );
  }
  const bits = privateKey.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS) {
    throw new TypeError(`RSA key too small: ${bits} bits, at least ${MIN_RSA_BITS} required`);
  }
  const publicKey = createPublicKey(privateKey);
  const publicKeyPem = publicKey.export({ type: "spki", format: "pem" }).toString();
  return Object.freeze({ privateKey, publicKey, publicKeyPem, modulusBits: bits });
}

/**
 * Parses a peer's RSA public key from PEM SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`); PKCS#1
 * (`BEGIN RSA PUBLIC KEY`) is accepted too.
 * @throws TypeError saying what was wrong.
 */
export function parseRsaPublicKey(pem: string): KeyObject {
  if (typeof pem !== "string" || !pem.includes("-----BEGIN ")) {
    throw new TypeError("RSA public key must be PEM text (-----BEGIN PUBLIC KEY-----)");
  }
  const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(pem)?.[1] ?? "";
  if (label.includes("PRIVATE KEY")) {
    throw new TypeError(`Expected an RSA public key but the PEM holds a ${label}`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: "pem" });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new TypeError(`Cannot read the RSA public key PEM (${label || "no PEM label"}): ${why}`, {
      cause: err,
    });
  }
  if (key.asymmetricKeyType !== "rsa") {
    throw new TypeError(`Expected an RSA public key, got ${key.asymmetricKeyType ?? "unknown"}`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS) {
    throw new TypeError(
      `RSA public key too small: ${bits} bits, at least ${MIN_RSA_BITS} required`,
    );
  }
  return key;
}

/**
 * The private key as unencrypted PEM: `pkcs8` (`BEGIN PRIVATE KEY`, default) or `pkcs1`
 * (`BEGIN RSA PRIVATE KEY`, Python's TraditionalOpenSSL).
 */
export function exportRsaPrivateKeyPem(
  pair: RsaKeyPair,
  format: "pkcs8" | "pkcs1" = "pkcs8",
): string {
  return pair.privateKey.export({ type: format, format: "pem" }).toString();
}

/**
 * A {@link NaclKeyPair} whose secret key is a getter over a private field: `JSON.stringify`,
 * `util.inspect` and loggers see only the public key and the key id.
 */
class NaclPair implements NaclKeyPair {
  readonly publicKey: Uint8Array;
  readonly kid: string;
  readonly #secretKey: Uint8Array;

  constructor(pair: { publicKey: Uint8Array; secretKey: Uint8Array }) {
    this.publicKey = pair.publicKey;
    this.kid = naclKeyId(pair.publicKey);
    this.#secretKey = pair.secretKey;
    Object.freeze(this);
  }

  get secretKey(): Uint8Array {
    return this.#secretKey;
  }

  toJSON(): { kid: string; publicKey: string } {
    return { kid: this.kid, publicKey: encodeNaclPublicKey(this.publicKey) };
  }
}

/** Generates an X25519 key pair for the `nacl` suite. */
export function generateNaclKeyPair(): NaclKeyPair {
  return new NaclPair(nacl.box.keyPair());
}

/**
 * The nacl key pair of a 32-byte secret key, given as bytes or standard base64.
 * @throws TypeError when it is not 32 bytes (or not base64).
 */
export function naclKeyPairFromSecretKey(secretKey: string | Uint8Array): NaclKeyPair {
  const raw = typeof secretKey === "string" ? decodeBase64Strict(secretKey.trim()) : secretKey;
  if (raw === null) throw new TypeError("nacl secret key text must be standard base64");
  if (raw.length !== nacl.box.secretKeyLength) {
    throw new TypeError(
      `nacl secret key must be ${nacl.box.secretKeyLength} bytes (got ${raw.length})`,
    );
  }
  return new NaclPair(nacl.box.keyPair.fromSecretKey(Uint8Array.from(raw)));
}

/**
 * The key id of a nacl public key: the first 16 hex characters of its SHA-256. It rides in the
 * `nuropb_enc_kid` header so a receiver holding several keys (rotation) picks the right one.
 */
export function naclKeyId(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("hex").slice(0, 16);
}

/** Standard base64 of a nacl public key, as announced in `nuropb_describe`. */
export function encodeNaclPublicKey(publicKey: Uint8Array): string {
  return toBuffer(publicKey).toString("base64");
}
