// Strict base64 helpers. Node's decoder skips characters it does not know and ignores padding,
// so a damaged text could decode "successfully"; these accept only canonical, padded text.

const STD = /^[A-Za-z0-9+/]*={0,2}$/;
const URL = /^[A-Za-z0-9\-_]*={0,2}$/;
const STD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/**
 * Decodes canonical padded base64 (`url` selects the URL-safe alphabet), or returns `null` when
 * the text is not exactly that: wrong characters, wrong length, or non-zero unused bits.
 */
export function decodeBase64Strict(text: string, url = false): Buffer | null {
  if (text.length % 4 !== 0 || !(url ? URL : STD).test(text)) return null;
  let pad = 0;
  if (text.endsWith("==")) pad = 2;
  else if (text.endsWith("=")) pad = 1;
  if (pad > 0) {
    const value = (url ? URL_ALPHABET : STD_ALPHABET).indexOf(text.charAt(text.length - pad - 1));
    if ((value & (pad === 2 ? 0x0f : 0x03)) !== 0) return null;
  }
  return Buffer.from(text, url ? "base64url" : "base64");
}

/** URL-safe base64 with `=` padding (the Fernet alphabet). */
export function encodeBase64UrlPadded(bytes: Uint8Array): string {
  const text = toBuffer(bytes).toString("base64url");
  const rest = text.length % 4;
  return rest === 0 ? text : text + "=".repeat(4 - rest);
}

/** A Buffer view of `bytes` without copying. */
export function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
