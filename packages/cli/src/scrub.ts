/**
 * Removes credentials from text headed for the terminal: masks `user:password@` in URLs and, when
 * it is long enough not to mangle ordinary words, the broker password itself.
 */
export function scrub(
  text: string,
  secrets: { readonly password: string; readonly username?: string },
): string {
  let out = text.replace(/\/\/([^:/@\s]*):[^@/\s]*@/g, "//$1:****@");
  const { password, username } = secrets;
  if (password.length >= 4 && password !== username) out = out.split(password).join("****");
  return out;
}

/** Context keys taken as credentials: `Authorization`, tokens, passwords, secrets, keys, cookies. */
const SECRET_KEY =
  /^authorization$|token|passw|pwd|secret|api[-_]?key|access[-_]?key|private[-_]?key|credential|cookie|session/i;

/** What a redacted value shows instead. */
export const REDACTED = "[redacted]";

/**
 * `value` with the values of credential-like keys (see {@link SECRET_KEY}) replaced by
 * {@link REDACTED}, at any depth of plain objects and arrays (a message's context, say).
 */
export function redactSecrets(value: unknown, depth = 0): unknown {
  if (typeof value !== "object" || value === null) return value;
  if (depth > 32) return REDACTED;
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEY.test(k) ? REDACTED : redactSecrets(v, depth + 1);
  }
  return out;
}
