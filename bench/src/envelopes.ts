import { encodePayload, newId } from "@nuropb/protocol";
import type { RequestPayload, ResponsePayload } from "@nuropb/protocol";

/** The request and response nuropb puts on the wire for one echo of `params`. */
export interface EchoEnvelopes {
  readonly request: RequestPayload;
  readonly response: ResponsePayload;
  /** Their bodies as `encodePayload` writes them. */
  readonly requestBody: Uint8Array;
  readonly responseBody: Uint8Array;
}

/** Builds the envelopes of one echo call (fresh correlation and trace ids, empty context). */
export function echoEnvelopes(params: Record<string, unknown>): EchoEnvelopes {
  const correlationId = newId();
  const traceId = newId();
  const request: RequestPayload = {
    tag: "request",
    service: "echo",
    method: "echo",
    params,
    correlation_id: correlationId,
    context: {},
    trace_id: traceId,
  };
  const response: ResponsePayload = {
    tag: "response",
    result: params,
    error: null,
    correlation_id: correlationId,
    trace_id: traceId,
    context: {},
    warning: null,
    reply_to: "",
  };
  return {
    request,
    response,
    requestBody: encodePayload(request).body,
    responseBody: encodePayload(response).body,
  };
}
