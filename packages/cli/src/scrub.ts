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
