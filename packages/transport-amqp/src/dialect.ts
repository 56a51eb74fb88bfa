import { NuropbTransportError } from "@nuropb/protocol";
import type { ChannelModel } from "amqplib";
import { channelError, connectError, openConnection } from "./connection.ts";
import { resolveOptions } from "./options.ts";
import type { AmqpTransportOptions } from "./options.ts";
import { closeQuietly } from "./session.ts";

/**
 * The mesh's record that it runs the compact dialect: an internal fanout exchange of this name in
 * the vhost (nothing is published to it; its existence is the record). It is the operator's
 * statement that no Python participant is on the mesh.
 */
export const COMPACT_MESH_MARKER = "nuropb-mesh-dialect-compact";

/**
 * Records on the broker that the mesh of `options` (its vhost) runs the compact dialect, so that
 * transports created with `dialect: "compact"` may connect to it. Idempotent. Mark a mesh only
 * when no Python participant will join it: Python peers cannot read the compact form of requests,
 * commands and events (responses follow the form of their request, so a Python caller still gets
 * headers).
 * @throws TypeError for invalid options; NuropbTransportError when the broker cannot be reached
 * or refuses (the password is never echoed).
 */
export async function markMeshCompact(options: AmqpTransportOptions): Promise<void> {
  await withChannelModel(options, async (conn, password) => {
    const ch = await conn.createChannel();
    try {
      await ch.assertExchange(COMPACT_MESH_MARKER, "fanout", {
        durable: true,
        internal: true,
        autoDelete: false,
      });
    } catch (err) {
      throw channelError(err, "cannot mark the mesh compact", password);
    } finally {
      await closeQuietly(ch);
    }
  });
}

/**
 * Resolves when the mesh of `conn` is marked compact ({@link markMeshCompact}).
 * @throws NuropbTransportError, permanent, when it is not.
 */
export async function assertMeshCompact(
  conn: ChannelModel,
  vhost: string,
  password: string,
): Promise<void> {
  let ch;
  try {
    ch = await conn.createChannel();
  } catch (err) {
    throw channelError(err, "cannot check the mesh's dialect", password);
  }
  ch.on("error", () => undefined);
  try {
    await ch.checkExchange(COMPACT_MESH_MARKER);
  } catch (err) {
    if ((err as { code?: unknown })?.code === 404) {
      throw new NuropbTransportError(
        `dialect "compact" needs a mesh marked compact, and mesh '${vhost}' is not: mark it with markMeshCompact() once no Python participant is on it, or use the default dialect`,
        { retryable: false, details: { permanent: true, vhost } },
      );
    }
    throw channelError(err, "cannot check the mesh's dialect", password);
  } finally {
    await closeQuietly(ch);
  }
}

async function withChannelModel(
  options: AmqpTransportOptions,
  use: (conn: ChannelModel, password: string) => Promise<void>,
): Promise<void> {
  const o = resolveOptions(options);
  // Any node of a cluster will do: each is tried in turn, the last failure reported.
  let conn: ChannelModel | undefined;
  let failure: NuropbTransportError | undefined;
  for (const target of o.targets) {
    try {
      conn = await openConnection({
        target,
        tls: o.tls,
        heartbeatSec: o.heartbeatSec,
        timeoutMs: o.connectTimeoutMs,
        connectionName: o.connectionName,
        clientProperties: o.clientProperties,
      });
      break;
    } catch (err) {
      failure = err instanceof NuropbTransportError ? err : connectError(err, target);
    }
  }
  if (conn === undefined) {
    throw failure ?? new NuropbTransportError("no broker address", { retryable: false });
  }
  conn.on("error", () => undefined);
  try {
    await use(conn, o.target.password);
  } finally {
    await closeQuietly(conn);
  }
}
