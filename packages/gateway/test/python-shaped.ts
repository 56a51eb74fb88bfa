import { decodeFrame, encodePayload } from "@nuropb/protocol";
import type { Listener, Transport } from "@nuropb/protocol";

/**
 * What a Python NuroPb service answers `nuropb_describe` with (PROTOCOL.md §9): `properties` as a
 * list of `[name, spec]` pairs, Python type names.
 */
export const PYTHON_DESCRIPTION = {
  service_name: "py_orders",
  service_version: "0.1.8",
  description: "A Python service",
  warnings: [],
  encrypted_methods: false,
  public_key: null,
  methods: {
    get_orders: {
      description: "Orders since a date",
      requires_encryption: false,
      parameters: {
        type: "object",
        properties: [
          ["order_date", { type: "datetime", description: "", default: "" }],
          ["account", { type: "str", description: "", default: null }],
          ["limit", { type: "int", description: "", default: 10 }],
        ],
        required: ["order_date"],
      },
    },
  },
};

/**
 * Serves `name` over a bare transport the way a Python service does: `nuropb_describe` answers
 * `description` ({@link PYTHON_DESCRIPTION} by default), any other method echoes its params.
 */
export async function servePythonShaped(
  transport: Transport,
  name: string,
  description: unknown = PYTHON_DESCRIPTION,
): Promise<Listener> {
  await transport.connect();
  return transport.consumeService(
    { service: name, rpcBindings: [], eventBindings: [], prefetch: 8 },
    async (delivery) => {
      const msg = decodeFrame(delivery);
      await delivery.ack();
      if (msg.type !== "request" || delivery.replyTo === undefined) return;
      const result = msg.payload.method === "nuropb_describe" ? description : msg.payload.params;
      await transport.send(
        { kind: "reply", address: delivery.replyTo },
        encodePayload({
          tag: "response",
          result,
          error: null,
          correlation_id: msg.correlationId,
          trace_id: msg.traceId,
          context: msg.payload.context,
          warning: null,
          reply_to: delivery.replyTo,
        } as never),
      );
    },
  );
}
