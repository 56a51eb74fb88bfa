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
 * `description` ({@link PYTHON_DESCRIPTION} by default), a described method echoes its params,
 * and any other (`nuropb_stats` too) is answered `NuropbHandlingError` "Unknown method {name}",
 * followed, as Python does (PROTOCOL.md §7.3), by a second response with the same correlation id.
 * `onRequest` sees each request's method and context.
 */
export async function servePythonShaped(
  transport: Transport,
  name: string,
  description: unknown = PYTHON_DESCRIPTION,
  onRequest?: (method: string, context: unknown) => void,
): Promise<Listener> {
  await transport.connect();
  return transport.consumeService(
    { service: name, rpcBindings: [], eventBindings: [], prefetch: 8 },
    async (delivery) => {
      const msg = decodeFrame(delivery);
      await delivery.ack();
      if (msg.type !== "request" || delivery.replyTo === undefined) return;
      const replyTo = delivery.replyTo;
      const method = msg.payload.method;
      onRequest?.(method, msg.payload.context);
      const methods = (description as { methods?: object } | null)?.methods ?? {};
      const reply = (result: unknown, error: unknown) =>
        transport.send(
          { kind: "reply", address: replyTo },
          encodePayload({
            tag: "response",
            result,
            error,
            correlation_id: msg.correlationId,
            trace_id: msg.traceId,
            context: msg.payload.context,
            warning: null,
            reply_to: replyTo,
          } as never),
        );
      if (method === "nuropb_describe") return reply(description, null);
      if (Object.hasOwn(methods, method)) return reply(msg.payload.params, null);
      const unknown = `Unknown method ${method}`;
      await reply(null, { error: "NuropbHandlingError", description: unknown });
      await reply(unknown, null);
    },
  );
}
