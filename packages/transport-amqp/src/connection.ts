import { readFile } from "node:fs/promises";
import { NUROPB_PROTOCOL_VERSION, NUROPB_VERSION, NuropbTransportError } from "@nuropb/protocol";
import amqp from "amqplib";
import type { Socket } from "node:net";
import type { ChannelModel } from "amqplib";
import type { AmqpTlsOptions, ResolvedTarget } from "./options.ts";
import { describeTarget, redact } from "./options.ts";

/** What one connection attempt needs. */
export interface ConnectParams {
  readonly target: ResolvedTarget;
  readonly tls: AmqpTlsOptions | undefined;
  readonly heartbeatSec: number;
  readonly timeoutMs: number;
  readonly connectionName: string;
  readonly clientProperties: Readonly<Record<string, string>>;
}

/**
 * Opens one AMQP connection (TCP_NODELAY on: Nagle costs ~40 ms per request otherwise).
 * @throws NuropbTransportError whose `details.permanent` says whether retrying can help.
 */
export async function openConnection(params: ConnectParams): Promise<ChannelModel> {
  const { target } = params;
  const socketOptions: Record<string, unknown> = {
    noDelay: true,
    keepAlive: true,
    timeout: params.timeoutMs,
    clientProperties: {
      product: "Nuropb",
      version: NUROPB_VERSION,
      protocol: NUROPB_PROTOCOL_VERSION,
      platform: `TypeScript (Node.js ${process.version})`,
      information: "nuropb for TypeScript, @nuropb/transport-amqp",
      ...params.clientProperties,
      connection_name: params.connectionName,
    },
  };
  if (target.tls) Object.assign(socketOptions, await tlsSocketOptions(target, params.tls));
  let model: ChannelModel;
  try {
    model = await withTimeout(
      amqp.connect(
        {
          protocol: target.tls ? "amqps" : "amqp",
          hostname: target.host,
          port: target.port,
          username: target.username,
          password: target.password,
          vhost: target.vhost,
          heartbeat: params.heartbeatSec,
        },
        socketOptions,
      ),
      params.timeoutMs,
      target,
    );
  } catch (err) {
    throw connectError(err, target);
  }
  coalesceWrites(model);
  return model;
}

interface Muxer {
  out?: unknown;
  _readIncoming?: unknown;
}

/**
 * amqplib's muxer hands the socket each channel's frames one `write` at a time: a syscall per
 * message. Corking the socket while the muxer drains one round sends the round in one `writev`
 * (at 64 in flight, about 27 messages per syscall). It reaches into amqplib's connection
 * (`connection.muxer`); when that is not there, nothing changes. Returns whether it applied.
 */
export function coalesceWrites(model: ChannelModel): boolean {
  const muxer = (model as unknown as { connection?: { muxer?: Muxer } }).connection?.muxer;
  const socket = muxer?.out as Partial<Pick<Socket, "cork" | "uncork">> | undefined;
  const read = muxer?._readIncoming;
  if (
    muxer === undefined ||
    typeof read !== "function" ||
    typeof socket?.cork !== "function" ||
    typeof socket.uncork !== "function"
  ) {
    return false;
  }
  const { cork, uncork } = socket as Pick<Socket, "cork" | "uncork">;
  muxer._readIncoming = function (this: Muxer): unknown {
    cork.call(socket);
    try {
      return (read as (this: Muxer) => unknown).call(this);
    } finally {
      uncork.call(socket);
    }
  };
  return true;
}

async function tlsSocketOptions(
  target: ResolvedTarget,
  tls: AmqpTlsOptions | undefined,
): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const t = tls ?? {};
  const load = async (what: string, file: string): Promise<Buffer> => {
    try {
      return await readFile(file);
    } catch (err) {
      throw new NuropbTransportError(
        `cannot read TLS ${what} file ${file}: ${(err as Error).message}`,
        {
          cause: err,
          details: { permanent: true },
        },
      );
    }
  };
  const ca = t.caFile !== undefined ? await load("CA", t.caFile) : t.ca;
  if (ca !== undefined)
    out.ca = Array.isArray(ca) ? ca.map(toPem) : [toPem(ca as string | Uint8Array)];
  const cert = t.certFile !== undefined ? await load("certificate", t.certFile) : t.cert;
  if (cert !== undefined) out.cert = toPem(cert);
  const key = t.keyFile !== undefined ? await load("key", t.keyFile) : t.key;
  if (key !== undefined) out.key = toPem(key);
  if (t.passphrase !== undefined) out.passphrase = t.passphrase;
  const verify = t.verify ?? true;
  out.rejectUnauthorized = verify;
  if (!verify) out.checkServerIdentity = () => undefined;
  if (t.servername !== undefined) out.servername = t.servername;
  return out;
}

function toPem(v: string | Uint8Array): string | Buffer {
  return typeof v === "string" ? v : Buffer.from(v);
}

function withTimeout<T extends ChannelModel>(
  p: Promise<T>,
  ms: number,
  target: ResolvedTarget,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      reject(new Error(`connection attempt to ${describeTarget(target)} timed out after ${ms} ms`));
    }, ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        if (timedOut) {
          v.on("error", () => undefined);
          v.close().catch(() => undefined);
        } else resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** Socket error codes of a TLS peer that cannot be verified or spoken to: retrying cannot help. */
const TLS_PERMANENT =
  /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ERR_TLS|ERR_SSL|ALTNAME|EPROTO|HOSTNAME/;
/** TLS codes that match {@link TLS_PERMANENT} but describe a passing condition. */
const TLS_TRANSIENT = new Set(["ERR_TLS_HANDSHAKE_TIMEOUT"]);

/** AMQP reply code 403 ACCESS_REFUSED. */
const ACCESS_REFUSED = 403;

/** How the broker turned a connection down during the AMQP handshake. */
interface HandshakeRefusal {
  /** `login`: connection.close in answer to start-ok; `open`: in answer to connection.open. */
  readonly step: "login" | "open";
  /** The AMQP reply code, when amqplib reports it. */
  readonly replyCode: number | undefined;
}

/**
 * Reads a refused handshake out of amqplib's error. amqplib gives these errors no `code`, so this
 * is the one place that reads its message: "Handshake terminated by server: 403 (ACCESS-REFUSED)
 * with message …" after start-ok, "Expected ConnectionOpenOk; got <ConnectionClose …>" after
 * connection.open (RabbitMQ answers 530 NOT_ALLOWED there: no such vhost, or no access to it).
 */
function handshakeRefusal(message: string): HandshakeRefusal | undefined {
  const login = /^Handshake terminated by server: (\d+) /.exec(message);
  if (login !== null) return { step: "login", replyCode: Number(login[1]) };
  if (/^Expected ConnectionOpenOk; got <ConnectionClose\b/.test(message)) {
    return { step: "open", replyCode: undefined };
  }
  return undefined;
}

/**
 * Translates an amqplib / socket error from a connection attempt, classified by its code. Refusals
 * that retrying cannot fix are marked `details.permanent`; those of the login or the vhost also
 * `details.refused` (`"login"` / `"vhost"`): see {@link isAccessRefusal}. Socket errors (reset,
 * DNS, refused, timed out) are retryable.
 */
export function connectError(err: unknown, target: ResolvedTarget): NuropbTransportError {
  if (err instanceof NuropbTransportError) return err;
  const e = err as { message?: string; code?: unknown };
  const message = typeof e?.message === "string" ? e.message : String(err);
  const raw = redact(message, target.password, target.username);
  const code = typeof e?.code === "string" ? e.code : undefined;
  const refusal = handshakeRefusal(message);
  const where = describeTarget(target);
  let text: string;
  let permanent = false;
  let refused: "login" | "vhost" | undefined;
  if (refusal?.step === "login" && refusal.replyCode === ACCESS_REFUSED) {
    permanent = true;
    refused = "login";
    text = `RabbitMQ refused the login of user '${target.username}' at ${where} (ACCESS_REFUSED: wrong username or password, or the user may not connect)`;
  } else if (refusal?.step === "open" && /NOT_ALLOWED - vhost .* is down/.test(message)) {
    // 530 "vhost X is down": that node lost the vhost for now; it (or another node) may serve it.
    text = `vhost '${target.vhost}' is down at ${where}`;
  } else if (refusal?.step === "open") {
    permanent = true;
    refused = "vhost";
    text = `RabbitMQ refused to open vhost '${target.vhost}' at ${where}: it does not exist or user '${target.username}' has no access to it (create the mesh with configureMesh first)`;
  } else if (code !== undefined && TLS_PERMANENT.test(code) && !TLS_TRANSIENT.has(code)) {
    permanent = true;
    text = `TLS connection to ${where} failed: ${raw} (${code})`;
  } else if (code === "ENOTFOUND") {
    text = `host '${target.host}' not found (${where})`;
  } else {
    text = `cannot connect to ${where}: ${raw}${code !== undefined && !raw.includes(code) ? ` (${code})` : ""}`;
  }
  return new NuropbTransportError(text, {
    cause: err,
    retryable: !permanent,
    details: {
      permanent,
      ...(refused !== undefined ? { refused } : {}),
      ...(code !== undefined ? { code } : {}),
      ...(refusal?.replyCode !== undefined ? { replyCode: refusal.replyCode } : {}),
    },
  });
}

/**
 * True when the broker refused the login (ACCESS_REFUSED) or the vhost (NOT_ALLOWED): the only
 * errors after which a reconnect loop gives up. Everything else there may pass (a TLS reset, DNS
 * while a broker container restarts, a queue still held by the old connection's consumer).
 */
export function isAccessRefusal(err: unknown): boolean {
  if (!(err instanceof NuropbTransportError)) return false;
  const refused = (err.details as { refused?: unknown } | undefined)?.refused;
  return refused === "login" || refused === "vhost";
}

/** True for an error marked permanent by {@link connectError} or {@link channelError}. */
export function isPermanent(err: unknown): boolean {
  return (
    err instanceof NuropbTransportError &&
    (err.details as { permanent?: unknown } | undefined)?.permanent === true
  );
}

/** AMQP reply codes after which retrying the same operation cannot succeed. */
const PERMANENT_CODES = new Set([403, 404, 405, 406, 530]);

/**
 * A 404 NOT_FOUND that RabbitMQ gives for a durable queue whose home node is down or inaccessible
 * ("home node 'rabbit@x' of durable queue 'q' in vhost '/' is down or inaccessible"), not for a
 * queue that does not exist: it passes when the node comes back, so it is never permanent.
 */
export function isNodeDown(err: unknown): boolean {
  const text = String((err as Error)?.message ?? err);
  return /down or inaccessible|home node/i.test(text);
}

/** Translates an amqplib channel / operation error (a broker channel.close). */
export function channelError(
  err: unknown,
  what: string,
  password: string | undefined,
): NuropbTransportError {
  if (err instanceof NuropbTransportError) return err;
  const e = err as { message?: string; code?: unknown };
  const raw = typeof e?.message === "string" ? e.message : String(err);
  const code = typeof e?.code === "number" ? e.code : undefined;
  const permanent =
    code !== undefined && PERMANENT_CODES.has(code) && !(code === 404 && isNodeDown(err));
  const reason = redact(
    raw.replace(/^(Operation failed: \w+; |Channel closed by server: )/, ""),
    password,
  );
  return new NuropbTransportError(`${what}: ${reason}`, {
    cause: err,
    retryable: !permanent,
    details: { permanent, ...(code !== undefined ? { replyCode: code } : {}) },
  });
}
