export { createGatewayClient } from "./client.ts";
export { GatewayError, GatewayConnectionError } from "./errors.ts";
export { importSealingKey, seal, ReplyKey } from "./rsa-fernet.ts";
export { CloseCode, WEBSOCKET_PATH } from "./wire.ts";

export type {
  GatewayClient,
  GatewayClientOptions,
  GatewayClientState,
  GatewayEvent,
  GatewayProxy,
  GatewayServiceDescription,
  CallOptions,
  Subscription,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.ts";
export type { SealingKey } from "./rsa-fernet.ts";
export type { ClientMessage, ServerMessage, ErrorObject, MessageId } from "./wire.ts";
