/**
 * The `rsa-fernet` suite of NuroPb (PROTOCOL.md §10), in WebCrypto only, so a browser can seal
 * a call for a service and open its answer:
 *
 * ```
 * body  = B64( RSA-OAEP-SHA256( fernet_key_text, service_public_key ) ) "." B64( fernet_token )
 * token = 0x80 ‖ 8-byte big-endian seconds ‖ 16-byte IV ‖ AES-128-CBC/PKCS7 ‖ HMAC-SHA256
 * ```
 *
 * `B64` is standard base64; the Fernet key text (44 characters) and the token are URL-safe
 * base64 with padding; the key's first 16 bytes sign, the last 16 encrypt. The answer is sealed
 * with the same Fernet key; its first part (the key wrapped again) is not needed to open it.
 */

// Derived from `crypto.subtle`, so the source compiles with the DOM types and with Node's.
type Subtle = typeof globalThis.crypto.subtle;
type CryptoKey = Awaited<ReturnType<Subtle["importKey"]>>;

const VERSION = 0x80;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function subtle(): Subtle {
  const s = globalThis.crypto?.subtle;
  if (s === undefined) {
    throw new TypeError(
      "end-to-end encryption needs WebCrypto (crypto.subtle): a secure context (https or localhost) in a browser, Node 20 or later",
    );
  }
  return s;
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

const toBase64Url = (bytes: Uint8Array): string =>
  toBase64(bytes).replaceAll("+", "-").replaceAll("/", "_");
const fromBase64Url = (text: string): Uint8Array<ArrayBuffer> =>
  fromBase64(text.replaceAll("-", "+").replaceAll("_", "/"));

/** The DER bytes of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo). @throws TypeError for anything else */
function spkiOf(pem: string): Uint8Array<ArrayBuffer> {
  const m = /-----BEGIN PUBLIC KEY-----([A-Za-z0-9+/=\s]+)-----END PUBLIC KEY-----/.exec(pem);
  if (m === null || m[1] === undefined) {
    throw new TypeError(
      "the service's public key must be a PEM 'PUBLIC KEY' (SubjectPublicKeyInfo)",
    );
  }
  return fromBase64(m[1].replace(/\s+/g, ""));
}

/** A service's RSA public key, ready to wrap Fernet keys. */
export type SealingKey = CryptoKey;

/**
 * Imports a service's RSA public key (PEM, as `nuropb_describe` announces it).
 * @throws TypeError for a key that is not a PEM SubjectPublicKeyInfo of an RSA key.
 */
export async function importSealingKey(pem: string): Promise<SealingKey> {
  try {
    return await subtle().importKey(
      "spki",
      spkiOf(pem),
      { name: "RSA-OAEP", hash: "SHA-256" },
      false,
      ["encrypt"],
    );
  } catch (err) {
    if (err instanceof TypeError) throw err;
    throw new TypeError(`the service's public key cannot be read: ${(err as Error).message}`);
  }
}

/** What opens the answer to one sealed call. Holds its key privately. */
export class ReplyKey {
  readonly #signing: CryptoKey;
  readonly #encryption: CryptoKey;
  constructor(signing: CryptoKey, encryption: CryptoKey) {
    this.#signing = signing;
    this.#encryption = encryption;
  }

  /**
   * Opens a sealed answer and returns its plaintext.
   * @throws TypeError when the body is not a well-formed sealed body, or was not sealed with
   *   this call's key (or was changed).
   */
  async open(body: string): Promise<string> {
    const dot = body.indexOf(".");
    if (dot < 0) throw new TypeError("a sealed answer has two parts separated by '.'");
    let token: Uint8Array<ArrayBuffer>;
    try {
      token = fromBase64Url(decoder.decode(fromBase64(body.slice(dot + 1))));
    } catch {
      throw new TypeError("a sealed answer's second part is not base64 of a Fernet token");
    }
    if (token.length < 1 + 8 + 16 + 16 + 32 || token[0] !== VERSION) {
      throw new TypeError("a sealed answer holds no Fernet token");
    }
    const signed = token.subarray(0, token.length - 32);
    const mac = token.subarray(token.length - 32);
    const s = subtle();
    if (!(await s.verify("HMAC", this.#signing, mac, signed))) {
      throw new TypeError("the sealed answer does not open with this call's key (tampered)");
    }
    const iv = token.subarray(9, 25);
    const plain = await s.decrypt(
      { name: "AES-CBC", iv },
      this.#encryption,
      token.subarray(25, token.length - 32),
    );
    return decoder.decode(plain);
  }
}

/**
 * Seals `plaintext` (a NuroPb request or command body) for the holder of `key`.
 * @returns the body to send and the key that opens its answer.
 */
export async function seal(
  plaintext: string,
  key: SealingKey,
  now: () => number = Date.now,
): Promise<{ readonly body: string; readonly replyKey: ReplyKey }> {
  const s = subtle();
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const keyText = toBase64Url(raw); // 44 characters, with padding
  const signing = await s.importKey(
    "raw",
    raw.slice(0, 16),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
  const encryption = await s.importKey("raw", raw.slice(16), { name: "AES-CBC" }, false, [
    "encrypt",
    "decrypt",
  ]);
  const iv = crypto.getRandomValues(new Uint8Array(16));
  const cipher = new Uint8Array(
    await s.encrypt({ name: "AES-CBC", iv }, encryption, encoder.encode(plaintext)),
  );
  const head = new Uint8Array(25);
  head[0] = VERSION;
  new DataView(head.buffer).setBigUint64(1, BigInt(Math.floor(now() / 1000)));
  head.set(iv, 9);
  const signed = new Uint8Array(head.length + cipher.length);
  signed.set(head);
  signed.set(cipher, head.length);
  const mac = new Uint8Array(await s.sign("HMAC", signing, signed));
  const token = new Uint8Array(signed.length + mac.length);
  token.set(signed);
  token.set(mac, signed.length);
  const wrapped = new Uint8Array(
    await s.encrypt({ name: "RSA-OAEP" }, key, encoder.encode(keyText)),
  );
  const body = `${toBase64(wrapped)}.${toBase64(encoder.encode(toBase64Url(token)))}`;
  return { body, replyKey: new ReplyKey(signing, encryption) };
}
