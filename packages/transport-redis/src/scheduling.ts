import { createHash } from "node:crypto";
import type { Redis } from "ioredis";
import { NuropbMessageError, newId, serviceQueueName } from "@nuropb/protocol";
import type { ClaimOutcome, Frame, Logger, TransportScheduling } from "@nuropb/protocol";
import {
  assertClaimKey,
  assertClaimTaker,
  assertClaimTtl,
  assertScheduledService,
  scheduledDelayMs,
} from "@nuropb/protocol/transport-kit";
import { frameToFields } from "./frame-codec.ts";
import { isKeyName } from "./keys.ts";
import { runScript } from "./scripts.ts";
import type { Script } from "./scripts.ts";

// Scheduling on Redis. Everything lives in the server, under the mesh's prefix:
//
// - `{mesh}:delayed`    sorted set: id of a delayed frame, scored by its due time (server clock, ms)
// - `{mesh}:delayedf`   hash: id → MessagePack [service, entry fields…]
// - `{mesh}:claim:{key}` string: "" while the claim is open, then the taker; expires (PX) with it
//
// Every connected transport runs the mover: every SCHEDULE_POLL_MS it runs MOVE_DUE, which moves
// the due frames (up to MOVE_BATCH at a time, again at once while there are more) into their
// service streams, exactly as a send adds them. A script runs alone on the server, so two movers
// never move one frame twice.

/** How often each connected transport looks for due frames, in ms: a frame lands up to this late. */
export const SCHEDULE_POLL_MS = 100;
/** Most frames one run of the mover moves. */
const MOVE_BATCH = 256;

function script(name: string, source: string): Script {
  return { name, source, sha: createHash("sha1").update(source).digest("hex") };
}

const NOW_LUA = `
local function nowMs(up)
  local t = redis.call('TIME')
  local us = tonumber(t[2]) / 1000
  if up then us = math.ceil(us) else us = math.floor(us) end
  return tonumber(t[1]) * 1000 + us
end
`;

/**
 * Holds a frame. ARGV[1] = `{mesh}:`, ARGV[2] = service, ARGV[3] = delay in ms, ARGV[4] = id,
 * ARGV[5…] = the entry's fields. The due time is the server's now (rounded up) plus the delay.
 */
const HOLD_DELAYED = script(
  "hold-delayed",
  `${NOW_LUA}
redis.call('HSET', ARGV[1] .. 'delayedf', ARGV[4], cmsgpack.pack({ ARGV[2], unpack(ARGV, 5) }))
redis.call('ZADD', ARGV[1] .. 'delayed', nowMs(true) + tonumber(ARGV[3]), ARGV[4])
return 1
`,
);

/**
 * Moves due frames to their service streams (dropped when the service has none, as AMQP's default
 * exchange drops a message for a queue that does not exist). ARGV[1] = `{mesh}:`, ARGV[2] = most
 * frames to move. Returns how many were taken.
 */
const MOVE_DUE = script(
  "move-due",
  `${NOW_LUA}
local zkey = ARGV[1] .. 'delayed'
local hkey = ARGV[1] .. 'delayedf'
local ids = redis.call('ZRANGEBYSCORE', zkey, '-inf', nowMs(false), 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local blob = redis.call('HGET', hkey, id)
  redis.call('ZREM', zkey, id)
  redis.call('HDEL', hkey, id)
  if blob then
    local a = cmsgpack.unpack(blob)
    local stream = ARGV[1] .. 'sq:' .. a[1]
    if redis.call('EXISTS', stream) == 1 then
      redis.call('XADD', stream, '*', unpack(a, 2))
    end
  end
end
return #ids
`,
);

/** Adds an entry to a service's stream if it exists. KEYS[1] = stream; ARGV = fields. */
const ADD_IF_STREAM = script(
  "add-if-stream",
  `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[1], '*', unpack(ARGV))
return 1
`,
);

/**
 * KEYS[1] = claim; ARGV[1] = taker. 1 when the claim is (now) the taker's, 0 when another taker
 * holds it, -1 when there is no such claim (expired or never opened).
 */
const TAKE_CLAIM = script(
  "take-claim",
  `
local cur = redis.call('GET', KEYS[1])
if cur == false then return -1 end
if cur == '' then
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
  return 1
end
if cur == ARGV[1] then return 1 end
return 0
`,
);

/** What the scheduling needs from its transport. */
export interface RedisSchedulingHost {
  /** `{mesh}:` */
  readonly prefix: string;
  readonly logger: Logger;
  readonly maxFrameBytes: number;
  /** The open connection. @throws when the transport is not open. */
  redis(): Redis;
  /** Translates a Redis error as `send` does. */
  translate(err: unknown, what: string): Error;
}

/** The scheduling capability of a Redis transport, with its mover. */
export interface RedisScheduling {
  readonly scheduling: TransportScheduling;
  /** The service addressed by a reply address from `serviceReplyAddress`, else undefined. */
  serviceOfAddress(address: string): string | undefined;
  /** Adds a reply addressed to a service to its stream (dropped when it has none). */
  deliverReply(service: string, frame: Frame): Promise<void>;
  /** Starts the mover (the transport is open). */
  start(): void;
  /** Stops the mover. */
  stop(): void;
}

const SERVICE_ADDRESS = /^nuropb-(.+)-sq$/;

/** Creates the scheduling of one Redis transport. */
export function createRedisScheduling(host: RedisSchedulingHost): RedisScheduling {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;

  const fieldsOf = (frame: Frame): (string | Buffer)[] => {
    if (typeof frame !== "object" || frame === null) {
      throw new NuropbMessageError("frame must be an object");
    }
    if (!(frame.body instanceof Uint8Array)) {
      throw new NuropbMessageError("frame.body must be a Uint8Array");
    }
    if (frame.body.byteLength > host.maxFrameBytes) {
      throw new NuropbMessageError(
        `frame body of ${frame.body.byteLength} bytes exceeds maxFrameBytes (${host.maxFrameBytes})`,
      );
    }
    if (typeof frame.correlationId !== "string") {
      throw new NuropbMessageError("frame.correlationId must be a string");
    }
    if (typeof frame.headers !== "object" || frame.headers === null) {
      throw new NuropbMessageError("frame.headers must be an object");
    }
    // The ttl is dropped: it would otherwise count from the entry's id, the time it lands.
    const { ttlMs: _ttl, ...rest } = frame;
    return frameToFields(rest);
  };

  const move = async (): Promise<void> => {
    if (running) return;
    running = true;
    try {
      const redis = host.redis();
      for (;;) {
        const moved = await runScript(redis, MOVE_DUE, [], [host.prefix, MOVE_BATCH]);
        if (moved !== MOVE_BATCH || timer === undefined) break;
      }
    } catch (err) {
      host.logger.debug("moving due frames failed; trying again", { error: err });
    } finally {
      running = false;
    }
  };

  const arm = (): void => {
    timer = setTimeout(() => {
      void move().finally(() => {
        if (timer !== undefined) arm();
      });
    }, SCHEDULE_POLL_MS);
    (timer as { unref?: () => void }).unref?.();
  };

  const serviceOfAddress = (address: string): string | undefined => {
    const m = SERVICE_ADDRESS.exec(address);
    return m === null ? undefined : m[1];
  };

  const scheduling: TransportScheduling = Object.freeze({
    serviceReplyAddress(service: string): string {
      assertScheduledService(service);
      return serviceQueueName(service);
    },
    async sendDelayed(service: string, frame: Frame, delayMs: number): Promise<void> {
      assertScheduledService(service);
      const delay = scheduledDelayMs(delayMs);
      if (!isKeyName(service)) throw new TypeError(`service '${service}' cannot name a stream`);
      const fields = fieldsOf(frame);
      const redis = host.redis();
      try {
        await runScript(redis, HOLD_DELAYED, [], [host.prefix, service, delay, newId(), ...fields]);
      } catch (err) {
        throw host.translate(err, `send a delayed frame to service '${service}'`);
      }
    },
    async openClaim(key: string, ttlMs: number): Promise<void> {
      assertClaimKey(key);
      assertClaimTtl(ttlMs);
      const redis = host.redis();
      try {
        await redis.set(`${host.prefix}claim:${key}`, "", "PX", ttlMs, "NX");
      } catch (err) {
        throw host.translate(err, "open a claim");
      }
    },
    async claim(key: string, taker: string): Promise<ClaimOutcome> {
      assertClaimKey(key);
      assertClaimTaker(taker);
      const redis = host.redis();
      try {
        const r = await runScript(redis, TAKE_CLAIM, [`${host.prefix}claim:${key}`], [taker]);
        return r === 1 ? "won" : r === 0 ? "lost" : "absent";
      } catch (err) {
        throw host.translate(err, "take a claim");
      }
    },
  });

  return {
    scheduling,
    serviceOfAddress,
    async deliverReply(service, frame) {
      const fields = fieldsOf(frame);
      try {
        await runScript(host.redis(), ADD_IF_STREAM, [`${host.prefix}sq:${service}`], fields);
      } catch (err) {
        throw host.translate(err, `send a reply to service '${service}'`);
      }
    },
    start() {
      if (timer === undefined) arm();
    },
    stop() {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    },
  };
}
