// Strict base64 helpers. Node's decoder skips characters it does not know and ignores padding,
// so a damaged text could decode "successfully"; these accept only canonical, padded text.

/**
 * Decodes canonical padded base64 (`url` selects the URL-safe alphabet), or returns `null` when
 * the text is not exactly that: wrong characters, wrong length, or non-zero unused bits.
 */
export function decodeBase64Strict(text: string, url = false): Buffer | null {
  if (text.length % 4 !== 0) return null;
  // Decode leniently (native), then require that encoding the bytes gives back exactly `text`:
  // that refuses foreign characters, the other alphabet, bad padding and non-zero trailing bits,
  // in two native passes instead of a regular expression over a long token.
  const bytes = Buffer.from(text, url ? "base64url" : "base64");
  const canonical = url ? encodeBase64UrlPadded(bytes) : bytes.toString("base64");
  return canonical === text ? bytes : null;
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
