export { createGateway } from "./gateway.ts";
export { HTTP_STATUS_BY_ERROR } from "./error-status.ts";
export { HttpPath, TTL_HEADER, TRACE_HEADER } from "./http-routes.ts";
export { PagePath } from "./pages.ts";
export { patternCovers } from "./topic-patterns.ts";

export type { Gateway, GatewayStats, ListenOptions } from "./gateway.ts";
export type {
  GatewayOptions,
  GatewayExposure,
  ExposedService,
  GatewayAuthorize,
  GatewayAuthorizeRequest,
  GatewayWebSocketOptions,
} from "./options.ts";
export type { OpenApiDocument } from "./openapi.ts";
