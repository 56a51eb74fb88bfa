import type { Redis } from "ioredis";
import { runTag } from "../rr.ts";
import { RedisEchoParts } from "./redis-replies.ts";

/** What the raw Redis echo does, for the suite's notes. */
export const RAW_REDIS_SETTINGS =
  "ioredis lists: client RPUSH {id, replyTo, params} to the request list, server BLMPOP (COUNT 64) on a dedicated connection, JSON.parse + JSON.stringify, RPUSH {id, result} to the client's reply list (pipelined per batch), client BLMPOP (COUNT 64) on its own dedicated connection";

/** A raw ioredis list-based echo server and one client. */
export interface RawRedisEcho {
  call(params: unknown): Promise<unknown>;
  close(): Promise<void>;
}

interface Request {
  readonly id: string;
  readonly replyTo: string;
  readonly params: unknown;
}

/** Starts the server loop and the client's reply loop, each blocking on its own connection. */
export async function startRawRedisEcho(url: string): Promise<RawRedisEcho> {
  const tag = runTag();
  const requestList = `bench:raw:rq:${tag}`;
  const replyList = `bench:raw:reply:${tag}`;
  const parts = new RedisEchoParts(url, "raw Redis echo");
  const { fail } = parts;
  const close = async (): Promise<void> => {
    parts.beginClose();
    for (const c of parts.conns) c.disconnect();
    await Promise.allSettled(parts.loops);
  };
  // BLMPOP reply: [key, [element, ...]] or null on timeout.
  const popBatch = async (r: Redis, key: string): Promise<string[]> => {
    const res = (await r.blmpop(1, 1, key, "LEFT", "COUNT", 64)) as [string, string[]] | null;
    return res === null ? [] : res[1];
  };
  try {
    const serverBlocking = parts.connection();
    const serverPush = parts.connection();
    const clientBlocking = parts.connection();
    const clientPush = parts.connection();
    await Promise.all(parts.conns.map((c) => c.ping()));
    parts.loops.push(
      (async () => {
        while (!parts.stopping) {
          let batch: string[];
          try {
            batch = await popBatch(serverBlocking, requestList);
          } catch (err) {
            if (!parts.stopping) fail(err);
            return;
          }
          if (batch.length === 0) continue;
          const pipe = serverPush.pipeline();
          for (const text of batch) {
            const req = JSON.parse(text) as Request;
            pipe.rpush(req.replyTo, JSON.stringify({ id: req.id, result: req.params }));
          }
          pipe.exec().catch(fail);
        }
      })().catch(fail),
    );
    parts.receive(clientBlocking, replyList, 1);
    return {
      call: (params) =>
        parts.call((id) =>
          clientPush.rpush(requestList, JSON.stringify({ id, replyTo: replyList, params })),
        ),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
