import { runTag } from "../rr.ts";
import { RedisEchoParts } from "./redis-replies.ts";

/** What the raw Redis Streams echo does, for the suite's notes. */
export const RAW_REDIS_STREAMS_SETTINGS =
  "ioredis streams: client XADD {id, replyTo, params} to a stream read by a consumer group, server XREADGROUP (COUNT 64) on a dedicated connection, JSON.parse + JSON.stringify, then per batch one pipeline: XACK + XDEL of the batch's entries, RPUSH {id, result} to the client's reply list + PEXPIRE of that list; client BLMPOP (COUNT 64) on its own dedicated connection; no Lua (nuropb runs one script per batch of sends, to route each request by rpc name and report 'not delivered', and to check each reply's address lease)";

/** A raw ioredis Streams echo server (consumer group, acknowledged entries) and one client. */
export interface RawRedisStreamsEcho {
  call(params: unknown): Promise<unknown>;
  close(): Promise<void>;
}

/** Most entries read by one XREADGROUP (nuropb's service window in the suite is 64 too). */
const READ_COUNT = 64;
/** How long one blocking read waits, in ms. */
const BLOCK_MS = 1_000;
/** Expiry of the reply list, renewed by every batch that pushes to it (a dead client's list goes away). */
const REPLY_LIST_TTL_MS = 60_000;

/** `[id, [field, value, field, value…]]`, as XREADGROUP returns an entry. */
type StreamEntry = [id: string, fields: string[] | null];

/** The entries of an XREADGROUP reply on one stream (`[[stream, entries]]`, or null on timeout). */
function entriesOf(reply: unknown): StreamEntry[] {
  if (!Array.isArray(reply)) return [];
  const perStream = reply[0] as [string, StreamEntry[]] | undefined;
  return perStream?.[1] ?? [];
}

/** The value of `name` in an entry's alternating field names and values. */
function field(fields: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === name) return fields[i + 1];
  }
  return undefined;
}

/**
 * Starts the server's read loop (XREADGROUP on a dedicated connection, replies and
 * acknowledgements pipelined per batch on another) and the client's reply loop (BLMPOP on its
 * own dedicated connection). The stream, its group and the reply list are named per run and
 * deleted by `close()`.
 */
export async function startRawRedisStreamsEcho(url: string): Promise<RawRedisStreamsEcho> {
  const tag = runTag();
  const stream = `bench:raws:sq:${tag}`;
  const group = "echo";
  const consumer = `c-${tag}`;
  const replyList = `bench:raws:reply:${tag}`;
  const parts = new RedisEchoParts(url, "raw Redis Streams echo");
  const { fail } = parts;
  // The last batch's pipeline: close() waits for it before deleting the keys.
  let lastBatch: Promise<unknown> = Promise.resolve();

  const serverBlocking = parts.connection();
  const serverPush = parts.connection();
  const clientBlocking = parts.connection();
  const clientPush = parts.connection();
  let created = false;

  const close = async (): Promise<void> => {
    if (!parts.beginClose()) return;
    // Disconnecting the blocking connections ends their pending reads, and so the loops.
    serverBlocking.disconnect();
    clientBlocking.disconnect();
    await Promise.allSettled(parts.loops);
    await lastBatch.catch(() => undefined);
    try {
      // On the client's connection: after every XADD it sent, so nothing recreates the stream.
      if (created) await clientPush.del(stream, replyList);
    } finally {
      for (const c of parts.conns) c.disconnect();
    }
  };

  try {
    await Promise.all(parts.conns.map((c) => c.ping()));
    await serverPush.xgroup("CREATE", stream, group, "0", "MKSTREAM");
    created = true;

    const serve = async (): Promise<void> => {
      while (!parts.stopping) {
        let entries: StreamEntry[];
        try {
          entries = entriesOf(
            await serverBlocking.call(
              "XREADGROUP",
              "GROUP",
              group,
              consumer,
              "COUNT",
              READ_COUNT,
              "BLOCK",
              BLOCK_MS,
              "STREAMS",
              stream,
              ">",
            ),
          );
        } catch (err) {
          if (!parts.stopping) fail(err);
          return;
        }
        if (entries.length === 0) continue;
        const ids: string[] = [];
        const replies = new Map<string, string[]>();
        for (const [entryId, fields] of entries) {
          ids.push(entryId);
          if (fields === null) continue; // deleted while pending: nothing to answer
          const id = field(fields, "id");
          const replyTo = field(fields, "replyTo");
          const params = field(fields, "params");
          if (id === undefined || replyTo === undefined || params === undefined) continue;
          const reply = JSON.stringify({ id, result: JSON.parse(params) as unknown });
          let list = replies.get(replyTo);
          if (list === undefined) {
            list = [];
            replies.set(replyTo, list);
          }
          list.push(reply);
        }
        // Acknowledged (and deleted, as nuropb does) once handled, then the replies.
        const pipe = serverPush.pipeline();
        pipe.xack(stream, group, ...ids);
        pipe.xdel(stream, ...ids);
        for (const [to, list] of replies) {
          pipe.rpush(to, ...list);
          pipe.pexpire(to, REPLY_LIST_TTL_MS);
        }
        lastBatch = pipe.exec().then((results) => {
          const failed = results?.find(([err]) => err !== null)?.[0];
          if (failed) fail(failed);
        }, fail);
      }
    };

    parts.loops.push(serve().catch(fail));
    parts.receive(clientBlocking, replyList, BLOCK_MS / 1000);
    return {
      call: (params) =>
        parts.call((id) =>
          clientPush.xadd(
            stream,
            "*",
            "id",
            id,
            "replyTo",
            replyList,
            "params",
            JSON.stringify(params),
          ),
        ),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
