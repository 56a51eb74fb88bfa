/** A fresh UUID4 rendered as 32 lowercase hex characters, the form NuroPb uses for ids. */
export function newId(): string {
  return globalThis.crypto.randomUUID().replaceAll("-", "");
}
