import type { TextMapGetter, TextMapSetter } from "@opentelemetry/api";
import type { OutgoingHeaders } from "@nuropb/core";
import type { WireHeaders } from "@nuropb/protocol";

/** Writes propagation fields (`traceparent`, `tracestate`…) into a call's outgoing headers. */
export const headerSetter: TextMapSetter<OutgoingHeaders> = {
  set(carrier, key, value) {
    carrier.set(key, value);
  },
};

/** Reads propagation fields from a message's wire headers; absent and null values are none. */
export const headerGetter: TextMapGetter<WireHeaders> = {
  keys(carrier) {
    return Object.keys(carrier);
  },
  get(carrier, key) {
    const v = carrier[key];
    return typeof v === "string" ? v : undefined;
  },
};
