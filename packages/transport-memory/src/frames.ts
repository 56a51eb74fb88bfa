import { NuropbMessageError } from "@nuropb/protocol";
import type { Destination, Frame, InboundFrame, WireHeaders } from "@nuropb/protocol";

/**
 * Checks the shape of a frame handed to `send` and returns a private copy of it (headers and body
 * bytes copied), so that the sender may reuse its objects as soon as `send` resolves.
 * @throws TypeError when the frame is malformed (a programming error).
 * @throws NuropbMessageError when the body is larger than `maxFrameBytes`.
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
  if (
    frame.ttlMs !== undefined &&
    (typeof frame.ttlMs !== "number" || !Number.isFinite(frame.ttlMs) || frame.ttlMs < 0)
  ) {
    throw new TypeError("frame.ttlMs must be a finite number of milliseconds >= 0 when present");
  }
  const headers = copyHeaders(frame.headers);
  if (frame.body.byteLength > maxFrameBytes) {
    throw new NuropbMessageError(
      `frame body of ${frame.body.byteLength} bytes exceeds maxFrameBytes (${maxFrameBytes})`,
      { details: { bodyBytes: frame.body.byteLength, maxFrameBytes } },
    );
  }
  return {
    headers,
    body: new Uint8Array(frame.body),
    correlationId: frame.correlationId,
    ...(frame.replyTo === undefined ? {} : { replyTo: frame.replyTo }),
    ...(frame.ttlMs === undefined ? {} : { ttlMs: frame.ttlMs }),
  };
}

/** A fresh copy of a stored frame for one delivery, marked with the redelivered flag. */
export function copyInboundFrame(frame: Frame, redelivered: boolean): InboundFrame {
  return {
    headers: Object.freeze(copyHeaders(frame.headers)),
    body: new Uint8Array(frame.body),
    correlationId: frame.correlationId,
    ...(frame.replyTo === undefined ? {} : { replyTo: frame.replyTo }),
    ...(frame.ttlMs === undefined ? {} : { ttlMs: frame.ttlMs }),
    redelivered,
  };
}

/** A copy of a stored frame without the delivery flag (for dead-letter inspection). */
export function copyFrame(frame: Frame): Frame {
  const { redelivered: _redelivered, ...rest } = copyInboundFrame(frame, false);
  return rest;
}

function copyHeaders(headers: WireHeaders): Record<string, string | null> {
  if (typeof headers !== "object" || headers === null || Array.isArray(headers)) {
    throw new TypeError("frame.headers must be an object");
  }
  // Object.fromEntries defines own data properties, so even a "__proto__" key survives.
  const entries = Object.entries(headers);
  for (const [name, value] of entries) {
    if (value !== null && typeof value !== "string") {
      throw new TypeError(`frame header '${name}' must be a string or null`);
    }
  }
  return Object.fromEntries(entries) as Record<string, string | null>;
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
