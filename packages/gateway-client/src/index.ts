export { CloseCode, WEBSOCKET_PATH } from "./wire.ts";

export type { ClientMessage, ServerMessage, ErrorObject, MessageId } from "./wire.ts";
