/**
 * Messages recorded from Python nuropb 0.1.8 (/work/shared/WIRE-SAMPLES.md), verbatim: properties
 * as pika sent them and the exact body bytes. Used as golden data by the AMQP wire tests.
 */

/** Properties of a recorded message, in pika's naming. */
export interface SampleProperties {
  readonly content_type: string;
  readonly headers: Readonly<Record<string, string | null>>;
  readonly correlation_id: string;
  readonly reply_to: string;
  readonly expiration?: string;
}

/** One recorded message. */
export interface WireSample {
  readonly exchange: string;
  readonly routingKey: string;
  readonly properties: SampleProperties;
  readonly body: string;
}

const CLIENT_RQ = "nuropb-nuropb-interop-client-3358d18f181c45c7a08bbee406657871-rq";

const headers = (type: string, traceId: string | null): Record<string, string | null> => ({
  nuropb_protocol: "0.1.1",
  nuropb_version: "0.1.8",
  nuropb_type: type,
  trace_id: traceId,
  encrypted: "",
});

/** `request (echo)`: request #1 seen on nuropb-rpc-exchange. */
export const SAMPLE_REQUEST: WireSample = {
  exchange: "nuropb-rpc-exchange",
  routingKey: "py-peer",
  properties: {
    content_type: "application/json",
    headers: headers("request", "trace-request"),
    correlation_id: "599a2f4d40644a36b6342a8ee3ed7d43",
    reply_to: CLIENT_RQ,
    expiration: "3600000",
  },
  body: '{"tag": "request", "service": "py-peer", "method": "echo", "params": {"greeting": "hello", "n": 1, "nested": {"ok": true}}, "correlation_id": "599a2f4d40644a36b6342a8ee3ed7d43", "context": {"origin": "capture_wire", "Authorization": "Bearer good"}, "trace_id": "trace-request"}',
};

/** The response #1 of 1 to {@link SAMPLE_REQUEST}. */
export const SAMPLE_RESPONSE: WireSample = {
  exchange: "",
  routingKey: CLIENT_RQ,
  properties: {
    content_type: "application/json",
    headers: headers("response", "trace-request"),
    correlation_id: "599a2f4d40644a36b6342a8ee3ed7d43",
    reply_to: "",
  },
  body: '{"tag": "response", "result": {"greeting": "hello", "n": 1, "nested": {"ok": true}}, "error": null, "correlation_id": "599a2f4d40644a36b6342a8ee3ed7d43", "trace_id": "trace-request", "context": {"origin": "capture_wire", "Authorization": "Bearer good"}, "warning": null, "reply_to": "nuropb-nuropb-interop-client-3358d18f181c45c7a08bbee406657871-rq"}',
};

/** `command (remember)`. */
export const SAMPLE_COMMAND: WireSample = {
  exchange: "nuropb-rpc-exchange",
  routingKey: "py-peer",
  properties: {
    content_type: "application/json",
    headers: headers("command", "trace-command"),
    correlation_id: "77a0b10f7f4e4e3b893f87a23f6ce008",
    reply_to: CLIENT_RQ,
    expiration: "3600000",
  },
  body: '{"tag": "command", "service": "py-peer", "method": "remember", "params": {"key": "k1", "value": "v1"}, "correlation_id": "77a0b10f7f4e4e3b893f87a23f6ce008", "context": {"origin": "capture_wire", "Authorization": "Bearer good"}, "trace_id": "trace-command"}',
};

/** `event published by the client`. */
export const SAMPLE_EVENT: WireSample = {
  exchange: "nuropb-events-exchange",
  routingKey: "interop.capture.client",
  properties: {
    content_type: "application/json",
    headers: headers("event", "trace-event"),
    correlation_id: "a74d8f70c2044ede8172906ae49f1397",
    reply_to: "",
  },
  body: '{"tag": "event", "topic": "interop.capture.client", "event": {"kind": "ping", "n": 7}, "context": {"origin": "capture_wire", "Authorization": "Bearer good"}, "trace_id": "trace-event", "correlation_id": "a74d8f70c2044ede8172906ae49f1397", "target": null}',
};

/** {@link SAMPLE_REQUEST} as a Python client without a trace id sends it: `trace_id` is void. */
export const SAMPLE_REQUEST_VOID_TRACE: WireSample = {
  ...SAMPLE_REQUEST,
  properties: { ...SAMPLE_REQUEST.properties, headers: headers("request", null) },
  body: SAMPLE_REQUEST.body.replace('"trace_id": "trace-request"', '"trace_id": null'),
};
