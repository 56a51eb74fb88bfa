import { NuropbMessageError } from "./errors.ts";

/**
 * Longest JSON text of a frame's headers a transport parses, in bytes (64 KiB). NuroPb's headers
 * are a few short strings; a bigger block is refused unread (the delivery is dead-lettered), so
 * that no publisher can make a receiver parse megabytes outside the body, which core bounds
 * with `maxInboundBodyBytes`.
 */
export const MAX_HEADERS_JSON_BYTES = 65_536;

/** The longest delay a Node timer keeps: a longer one fires after 1 ms instead. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * The largest message expiration every RabbitMQ accepts, in ms (2^32 - 1, Erlang's timer limit).
 * Brokers before 3.10 close the channel (406) beyond it; 3.10 and later take up to ten years, so
 * this is the portable limit. Core never asks for more than {@link MAX_TIMER_MS} anyway.
 */
export const MAX_MESSAGE_TTL_MS = 4_294_967_295;

/**
 * Checks a frame's `ttlMs` before it is sent: an integer from 0 (no expiry) to
 * {@link MAX_MESSAGE_TTL_MS}, or absent.
 * @throws NuropbMessageError naming what is wrong.
 */
export function assertFrameTtl(ttlMs: unknown): void {
  if (ttlMs === undefined) return;
  if (typeof ttlMs !== "number" || !Number.isSafeInteger(ttlMs) || ttlMs < 0) {
    throw new NuropbMessageError(
      `frame.ttlMs must be a non-negative integer, got ${String(ttlMs)}`,
    );
  }
  if (ttlMs > MAX_MESSAGE_TTL_MS) {
    // A broker that refuses it closes the channel (406), failing every unconfirmed send too.
    throw new NuropbMessageError(
      `frame.ttlMs must be at most ${MAX_MESSAGE_TTL_MS} ms (the largest message expiration every RabbitMQ accepts), got ${ttlMs}`,
    );
  }
}

/**
 * A positive whole-number option, or `fallback` when absent.
 * @param owner the factory, for the message (`createNatsTransport`).
 * @throws TypeError `owner: 'name' must be a positive integer, got …`
 */
export function positiveIntOption(
  owner: string,
  name: string,
  value: number | undefined,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(`${owner}: '${name}' must be a positive integer, got ${String(value)}`);
  }
  return value;
}

/**
 * A delay option used for a timer: a whole number of ms from `min` to {@link MAX_TIMER_MS}, or
 * `fallback` when absent.
 * @throws TypeError naming the option and the allowed range.
 */
export function timerOption(
  owner: string,
  name: string,
  value: number | undefined,
  fallback: number,
  min = 1,
): number {
  const ms = positiveIntOption(owner, name, value, fallback);
  if (ms < min || ms > MAX_TIMER_MS) {
    throw new TypeError(
      `${owner}: '${name}' must be from ${String(min)} to ${String(MAX_TIMER_MS)} ms, got ${String(ms)}`,
    );
  }
  return ms;
}
