import { DEFAULT_MESH, MAX_TIMER_MS, assertTopicPattern, parseWireJson } from "@nuropb/protocol";
import { obfuscateUrl } from "@nuropb/transport-amqp";
import { usageError } from "./errors.ts";
import { splitHostList } from "./transports.ts";

/** The brokers the CLI reaches, by URL scheme. */
export type BrokerKind = "amqp" | "nats" | "redis";

/** A broker URL the CLI checked, with the parts it needs. */
export interface BrokerUrl {
  /** Which broker: `amqp://`/`amqps://`, `nats://`/`tls://`, `redis://`/`rediss://`. */
  readonly kind: BrokerKind;
  /** The URL as given (with credentials: never print it). */
  readonly url: string;
  /** The URL with its password masked, for messages. */
  readonly shown: string;
  /**
   * The mesh: on RabbitMQ the URL's vhost, on NATS the URL's path (one segment), on Redis its
   * `mesh` parameter (the path is the database); decoded. @defaultValue "nuropb" on NATS and Redis
   */
  readonly vhost: string;
  /** The password, for scrubbing it out of foreign error text. */
  readonly password: string;
  /** The user name. */
  readonly username: string;
}

const URL_EXAMPLE = "amqp://user:password@host:5672/vhost";
const URL_EXAMPLES = `${URL_EXAMPLE}, nats://host:4222/mesh or redis://host:6379/0?mesh=name`;

/** AMQP's heartbeat is an unsigned 16-bit number of seconds. */
const MAX_HEARTBEAT_SEC = 65_535;

const KINDS: Readonly<Record<string, BrokerKind>> = {
  "amqp:": "amqp",
  "amqps:": "amqp",
  "nats:": "nats",
  "tls:": "nats",
  "redis:": "redis",
  "rediss:": "redis",
};

/** What {@link brokerUrl} is asked for. */
export interface BrokerUrlNeeds {
  /** The command needs RabbitMQ (its management API or vhosts): other schemes are refused. */
  readonly amqpFor?: string;
}

/**
 * The broker URL from `--url`, else `NUROPB_URL`, else `NUROPB_AMQP_URL`, checked: an `amqp://`
 * or `amqps://` URL with a host and a vhost path, a `nats://` (or `tls://`) URL with at most one
 * path segment (the mesh), or a `redis://` (or `rediss://`) URL.
 * @throws CliError (usage) saying what to fix; the password is never echoed.
 */
export function brokerUrl(
  option: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  needs: BrokerUrlNeeds = {},
): BrokerUrl {
  const fromEnv = [env.NUROPB_URL, env.NUROPB_AMQP_URL].find((v) => v !== undefined && v !== "");
  const text = option ?? fromEnv;
  if (text === undefined || text === "") {
    throw usageError(
      `no broker URL: pass --url ${needs.amqpFor === undefined ? URL_EXAMPLES : URL_EXAMPLE} or set NUROPB_URL`,
    );
  }
  const where =
    option !== undefined
      ? "--url"
      : env.NUROPB_URL !== undefined && env.NUROPB_URL !== ""
        ? "NUROPB_URL"
        : "NUROPB_AMQP_URL";
  let u: URL;
  try {
    // A cluster's nodes may be listed with commas: the first one is checked for the rest.
    u = new URL(splitHostList(text)[0] ?? text);
  } catch {
    throw usageError(`${where} is not a URL (${obfuscateUrl(text)}); expected ${URL_EXAMPLES}`);
  }
  const shown = obfuscateUrl(text);
  const kind = KINDS[u.protocol];
  if (kind === undefined) {
    throw usageError(
      `${where} must be an amqp://, amqps://, nats://, tls://, redis:// or rediss:// URL, got ${shown}; expected ${URL_EXAMPLES}`,
    );
  }
  if (needs.amqpFor !== undefined && kind !== "amqp") {
    throw usageError(
      `${needs.amqpFor} works on RabbitMQ only: ${where} must be an amqp:// or amqps:// URL, got ${shown}`,
    );
  }
  if (u.hostname === "") throw usageError(`${where} has no host: ${shown}`);
  const credentials = { password: safeDecode(u.password), username: safeDecode(u.username) };
  if (kind === "nats")
    return { kind, url: text, shown, vhost: natsMesh(u, where, shown), ...credentials };
  if (kind === "redis") {
    const mesh = u.searchParams.get("mesh") ?? DEFAULT_MESH;
    if (mesh === "") throw usageError(`${where} parameter mesh must not be empty: ${shown}`);
    return { kind, url: text, shown, vhost: mesh, ...credentials };
  }
  return { kind, url: text, shown, vhost: amqpVhost(u, where, shown), ...credentials };
}

function amqpVhost(u: URL, where: string, shown: string): string {
  const path = u.pathname.replace(/^\//, "");
  if (path === "") {
    throw usageError(
      `${where} has no vhost (the mesh is the URL's path): ${shown}; expected ${URL_EXAMPLE}`,
    );
  }
  if (path.includes("/")) {
    throw usageError(`${where} path must be one vhost segment (write '/' as %2F): ${shown}`);
  }
  let vhost: string;
  try {
    vhost = decodeURIComponent(path);
  } catch {
    throw usageError(`${where} vhost is not valid percent-encoding: ${shown}`);
  }
  for (const value of u.searchParams.getAll("heartbeat")) {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n > MAX_HEARTBEAT_SEC) {
      throw usageError(
        `${where} parameter heartbeat must be a whole number of seconds from 0 to ${MAX_HEARTBEAT_SEC}: ${shown}`,
      );
    }
  }
  return vhost;
}

function natsMesh(u: URL, where: string, shown: string): string {
  const path = u.pathname.replace(/^\//, "");
  if (path === "") return DEFAULT_MESH;
  if (!/^[A-Za-z0-9_-]+$/.test(path)) {
    throw usageError(
      `${where} path is the mesh, one subject token (letters, digits, '_', '-'): ${shown}`,
    );
  }
  return path;
}

/**
 * The management API URL from `--management-url`, else `NUROPB_MANAGEMENT_URL`, or `undefined`
 * (derive it from the AMQP URL).
 * @throws CliError (usage) for a URL that is not http(s).
 */
export function managementUrl(
  option: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): string | undefined {
  const fromEnv = env.NUROPB_MANAGEMENT_URL;
  const text = option ?? (fromEnv === "" ? undefined : fromEnv);
  if (text === undefined) return undefined;
  const where = option !== undefined ? "--management-url" : "NUROPB_MANAGEMENT_URL";
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw usageError(
      `${where} is not a URL (${obfuscateUrl(text)}); expected http://user:password@host:15672/api`,
    );
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw usageError(`${where} must be an http:// or https:// URL, got ${obfuscateUrl(text)}`);
  }
  return text;
}

/**
 * Parses a JSON object argument (params, context).
 * @throws CliError (usage) naming the argument and what is wrong with the text.
 */
export function jsonObject(text: string | undefined, what: string): Record<string, unknown> {
  if (text === undefined) return {};
  const value = jsonValue(text, what);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw usageError(
      `${what} must be a JSON object like '{"key":"value"}', got ${value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`}`,
    );
  }
  return value as Record<string, unknown>;
}

/**
 * Parses any JSON value (an event).
 * @throws CliError (usage) naming the argument and where the JSON breaks.
 */
export function jsonValue(text: string, what: string): unknown {
  try {
    // As a body is read: integers beyond 2^53 stay exact (bigints), written back bare.
    return parseWireJson(text);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw usageError(
      `${what} is not valid JSON (${reason}): ${text.length > 60 ? `${text.slice(0, 57)}...` : text}`,
      "quote JSON for the shell, e.g. '{\"id\": 42}'",
    );
  }
}

/**
 * Parses a positive whole number of milliseconds, at most {@link MAX_TIMER_MS}.
 * @throws CliError (usage)
 */
export function milliseconds(text: string, what: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n <= 0) {
    throw usageError(`${what} must be a positive whole number of milliseconds, got '${text}'`);
  }
  if (n > MAX_TIMER_MS) {
    throw usageError(`${what} must be at most ${MAX_TIMER_MS} milliseconds, got '${text}'`);
  }
  return n;
}

/**
 * Parses a positive whole number (a count).
 * @throws CliError (usage)
 */
export function positiveInteger(text: string, what: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n <= 0) {
    throw usageError(`${what} must be a positive whole number, got '${text}'`);
  }
  return n;
}

const NAME_RE = /^[A-Za-z0-9_.:-]+$/;

/**
 * Checks a method name (not empty).
 * @throws CliError (usage)
 */
export function methodName(text: string): string {
  if (text.trim() === "") throw usageError("method name must not be empty");
  return text;
}

/**
 * Checks a service name (letters, digits, `_ . : -`).
 * @throws CliError (usage)
 */
export function serviceName(text: string): string {
  if (!NAME_RE.test(text)) {
    throw usageError(`service name must be letters, digits, '_', '.', ':' or '-', got '${text}'`);
  }
  return text;
}

/**
 * Checks an event topic: non-empty, no wildcards.
 * @throws CliError (usage)
 */
export function topic(text: string): string {
  if (text === "" || text.includes("*") || text.includes("#")) {
    throw usageError(`'${text}' is not a topic: no wildcards, e.g. orders.created`);
  }
  return text;
}

/**
 * Checks a topic binding pattern: dot-separated words, `*` for one word, `#` for any number.
 * @throws CliError (usage)
 */
export function topicPattern(text: string): string {
  try {
    assertTopicPattern(text);
  } catch (err) {
    throw usageError(
      `${(err as Error).message}; a pattern is dot-separated words, '*' for one word, '#' for any number`,
    );
  }
  return text;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
