import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { noopLogger, type Logger } from "@nuropb/protocol";
import { toBuffer } from "./base64.ts";
import {
  createServiceKeys,
  exportRsaPrivateKeyPem,
  loadRsaKeyPair,
  naclKeyPairFromSecretKey,
  type NaclKeyPair,
  type RsaKeyPair,
  type ServiceKeys,
} from "./keys.ts";

/** The `format` field of a key file written by this package. */
export const KEY_FILE_FORMAT = "nuropb-keys";

/** Options of {@link serializeServiceKeys}. */
export interface SerializeKeysOptions {
  /** PEM flavour of the RSA private key. @defaultValue `"pkcs8"` */
  readonly rsaFormat?: "pkcs8" | "pkcs1";
}

/**
 * The JSON text of a key file: `{"format":"nuropb-keys","version":1,"rsa_private_key_pem":…,
 * "nacl_secret_key":…}` (PEM text and standard base64, `null` for an absent part).
 */
export function serializeServiceKeys(
  keys: ServiceKeys,
  options: SerializeKeysOptions = {},
): string {
  const doc = {
    format: KEY_FILE_FORMAT,
    version: 1,
    rsa_private_key_pem:
      keys.rsa === null ? null : exportRsaPrivateKeyPem(keys.rsa, options.rsaFormat),
    nacl_secret_key: keys.nacl === null ? null : toBuffer(keys.nacl.secretKey).toString("base64"),
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/**
 * Reads key material from text: a key file written by {@link serializeServiceKeys}, or a bare PEM
 * RSA private key (PKCS#8 or PKCS#1, as Python NuroPb examples store it).
 * @throws TypeError saying what was wrong with the text.
 */
export function parseServiceKeys(
  text: string,
  options: { readonly passphrase?: string } = {},
): ServiceKeys {
  const trimmed = text.trimStart();
  if (trimmed.startsWith("-----BEGIN ")) {
    return Object.freeze({ rsa: loadRsaKeyPair(text, options), nacl: null });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new TypeError("Key file is neither PEM nor JSON", { cause: err });
  }
  if (
    typeof doc !== "object" ||
    doc === null ||
    (doc as { format?: unknown }).format !== KEY_FILE_FORMAT
  ) {
    throw new TypeError(`Key file JSON must have "format": "${KEY_FILE_FORMAT}"`);
  }
  const {
    version,
    rsa_private_key_pem: pem,
    nacl_secret_key: secret,
  } = doc as Record<string, unknown>;
  if (version !== 1)
    throw new TypeError(`Unsupported key file version ${String(version)} (expected 1)`);
  let rsa: RsaKeyPair | null = null;
  if (typeof pem === "string") rsa = loadRsaKeyPair(pem, options);
  else if (pem !== null && pem !== undefined)
    throw new TypeError("rsa_private_key_pem must be a string or null");
  let nacl: NaclKeyPair | null = null;
  if (typeof secret === "string") nacl = naclKeyPairFromSecretKey(secret);
  else if (secret !== null && secret !== undefined)
    throw new TypeError("nacl_secret_key must be a string or null");
  return Object.freeze({ rsa, nacl });
}

/**
 * Writes `keys` to `path` with mode 0600, atomically (through a temporary file in the same
 * directory).
 * @param options.overwrite replace an existing file. @defaultValue false: an existing file makes
 *   it fail with `EEXIST`
 */
export async function saveServiceKeys(
  path: string,
  keys: ServiceKeys,
  options: SerializeKeysOptions & { readonly overwrite?: boolean } = {},
): Promise<void> {
  const temp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  await writeFile(temp, serializeServiceKeys(keys, options), { mode: 0o600, flag: "wx" });
  try {
    if (options.overwrite === true) await rename(temp, path);
    else await link(temp, path);
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

/**
 * Reads a key file (JSON from {@link saveServiceKeys}, or a bare PEM RSA private key).
 * @throws TypeError when the content is not usable key material; file-system errors as they are.
 */
export async function loadServiceKeys(
  path: string,
  options: { readonly passphrase?: string; readonly logger?: Logger } = {},
): Promise<ServiceKeys> {
  const text = await readFile(path, "utf8");
  const info = await stat(path);
  if (process.platform !== "win32" && (info.mode & 0o077) !== 0) {
    (options.logger ?? noopLogger).warn("key file is readable by group or others", {
      path,
      mode: (info.mode & 0o777).toString(8),
    });
  }
  try {
    return parseServiceKeys(text, options);
  } catch (err) {
    throw new TypeError(`${path}: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
}

/** Options of {@link loadOrCreateKeyFile}. */
export interface LoadOrCreateKeyFileOptions {
  /** Generate an RSA-2048 key when creating the file. @defaultValue true */
  readonly rsa?: boolean;
  /** Generate a nacl key pair when creating the file. @defaultValue true */
  readonly nacl?: boolean;
  /** Passphrase of an encrypted PEM private key in an existing file. */
  readonly passphrase?: string;
  /** Receives `info` when a file is created and `warn` for a loosely-permissioned file. */
  readonly logger?: Logger;
}

/**
 * Loads the key file at `path`, or creates it (mode 0600) with fresh keys when it does not exist,
 * and its folder (mode 0700) when that does not exist either.
 * Creation is race-free: when several instances start together, one file wins and every
 * instance loads it, so they all share the same keys. An existing file is never modified.
 * @throws TypeError when an existing file is not usable key material.
 * @example
 * ```ts
 * const keys = await loadOrCreateKeyFile("./secrets/orders.keys.json");
 * const encryptor = createPayloadEncryptor({ keys });
 * ```
 */
export async function loadOrCreateKeyFile(
  path: string,
  options: LoadOrCreateKeyFileOptions = {},
): Promise<ServiceKeys> {
  const logger = options.logger ?? noopLogger;
  const load = (): Promise<ServiceKeys> =>
    loadServiceKeys(path, {
      logger,
      ...(options.passphrase === undefined ? {} : { passphrase: options.passphrase }),
    });
  try {
    return await load();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const keys = createServiceKeys({ rsa: options.rsa ?? true, nacl: options.nacl ?? true });
  // A missing folder is made private to the owner; an existing one is left as it is.
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  try {
    await saveServiceKeys(path, keys);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return load();
    throw err;
  }
  logger.info("created key file", { path, rsa: keys.rsa !== null, nacl: keys.nacl !== null });
  return keys;
}
