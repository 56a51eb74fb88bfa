import { NuropbMessageError, assertFrameTtl } from "@nuropb/protocol";
import { copyBytes } from "@nuropb/protocol/transport-kit";
import type { Destination, Frame, InboundFrame, WireHeaders } from "@nuropb/protocol";

/**
 * Checks the shape of a frame handed to `send` and returns a private copy of it (headers and body
 * bytes copied), so that the sender may reuse its objects as soon as `send` resolves.
 * @throws TypeError when the frame is malformed (a programming error).
 * @throws NuropbMessageError when the body is larger than `maxFrameBytes`, or the ttl is not an
 *   integer from 0 to 4294967295 ms (as the AMQP transport).
 */
export function copyOutgoingFrame(frame: Frame, maxFrameBytes: number): Frame {
  if (typeof frame !== "object" || frame === null) throw new TypeError("frame must be an object");
  if (!(frame.body instanceof Uint8Array)) throw new TypeError("frame.body must be a Uint8Array");
  if (typeof frame.correlationId !== "string") {
    throw new TypeError("frame.correlationId must be a string");
  }
  if (frame.replyTo !== undefined && typeof frame.replyTo !== "string") {
    throw new TypeError("frame.replyTo must be a string when present");
  }
  // The checks and errors of the AMQP transport, so a frame refused there is refused here too.
  assertFrameTtl(frame.ttlMs);
  const headers = copyHeaders(frame.headers);
  if (frame.body.byteLength > maxFrameBytes) {
    throw new NuropbMessageError(
      `frame body of ${frame.body.byteLength} bytes exceeds maxFrameBytes (${maxFrameBytes})`,
      { details: { bodyBytes: frame.body.byteLength, maxFrameBytes } },
    );
  }
  const out: { -readonly [K in keyof Frame]: Frame[K] } = {
    headers,
    body: copyBytes(frame.body),
    correlationId: frame.correlationId,
  };
  if (frame.replyTo !== undefined) out.replyTo = frame.replyTo;
  if (frame.ttlMs !== undefined) out.ttlMs = frame.ttlMs;
  return out;
}

/**
 * A stored frame as one delivery sees it, marked with the redelivered flag. The headers were frozen
 * at send time and are shared. The body is copied when the stored frame may be delivered again
 * (service queues: requeue, redelivery, event fan-out), so a handler mutating its bytes cannot
 * change what another delivery carries; a response is delivered once and keeps the bytes `send`
 * copied.
 */
export function inboundFrame(frame: Frame, redelivered: boolean, copyBody: boolean): InboundFrame {
  const out: { -readonly [K in keyof InboundFrame]: InboundFrame[K] } = {
    headers: frame.headers,
    body: copyBody ? copyBytes(frame.body) : frame.body,
    correlationId: frame.correlationId,
    redelivered,
  };
  if (frame.replyTo !== undefined) out.replyTo = frame.replyTo;
  if (frame.ttlMs !== undefined) out.ttlMs = frame.ttlMs;
  return out;
}

/** A copy of a stored frame without the delivery flag (for dead-letter inspection). */
export function copyFrame(frame: Frame): Frame {
  const { redelivered: _redelivered, ...rest } = inboundFrame(frame, false, true);
  return rest;
}

/** A frozen copy of the headers, checked: every value a string or null. */
function copyHeaders(headers: WireHeaders): Readonly<Record<string, string | null>> {
  if (typeof headers !== "object" || headers === null || Array.isArray(headers)) {
    throw new TypeError("frame.headers must be an object");
  }
  const out: Record<string, string | null> = {};
  for (const name in headers) {
    if (!Object.hasOwn(headers, name)) continue;
    const value = headers[name];
    if (value !== null && typeof value !== "string") {
      throw new TypeError(`frame header '${name}' must be a string or null`);
    }
    // defineProperty keeps even a "__proto__" header an own data property.
    if (name === "__proto__") Object.defineProperty(out, name, { value, enumerable: true });
    else out[name] = value;
  }
  return Object.freeze(out);
}

/**
 * Checks a destination handed to `send`.
 * @throws TypeError when it is malformed.
 */
export function assertDestination(to: Destination): void {
  if (typeof to !== "object" || to === null) throw new TypeError("destination must be an object");
  switch (to.kind) {
    case "rpc":
      if (typeof to.service !== "string" || to.service === "") {
        throw new TypeError("rpc destination needs a non-empty service name");
      }
      return;
    case "event":
      if (typeof to.topic !== "string" || to.topic === "") {
        throw new TypeError("event destination needs a non-empty topic");
      }
      return;
    case "reply":
      if (typeof to.address !== "string" || to.address === "") {
        throw new TypeError("reply destination needs a non-empty address");
      }
      return;
    default:
      throw new TypeError(
        `unknown destination kind '${String((to as { kind?: unknown }).kind)}' (rpc, event or reply)`,
      );
  }
}
