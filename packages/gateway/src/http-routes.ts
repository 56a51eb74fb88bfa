import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import {
  NuropbMessageError,
  NuropbValidationError,
  isNuropbError,
  parseWireJson,
  toWireJson,
} from "@nuropb/protocol";
import type { Logger } from "@nuropb/protocol";
import { errorJson, httpStatusOf, withStatus } from "./error-status.ts";
import type { Caller, GatewayOperations } from "./operations.ts";
import { buildOpenApi } from "./openapi.ts";

/** Request header: the call's ttl in ms. */
export const TTL_HEADER = "x-nuropb-ttl-ms";
/** Request and response header: the call's trace id. */
export const TRACE_HEADER = "x-nuropb-trace-id";

/** Where the REST routes live. */
export const HttpPath = {
  api: "/api",
  command: "/command",
  publish: "/publish",
  stats: "/stats",
  openapi: "/openapi.json",
} as const;

function callerOf(req: FastifyRequest): Caller {
  const auth = req.headers.authorization;
  return {
    token: auth === undefined || auth === "" ? undefined : auth,
    via: "http",
    remoteAddress: req.ip,
  };
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The ttl header as a number (checked later), undefined when absent. */
function ttlHeader(req: FastifyRequest): number | undefined {
  const raw = header(req, TTL_HEADER);
  if (raw === undefined) return undefined;
  if (!/^\d{1,16}$/.test(raw)) {
    throw new NuropbValidationError(`the ${TTL_HEADER} header must be a whole number of ms`);
  }
  return Number(raw);
}

function sendJson(reply: FastifyReply, status: number, text: string): FastifyReply {
  return reply.code(status).type("application/json; charset=utf-8").send(text);
}

/**
 * Answers a failure: its HTTP status and the NuroPb error JSON (see `HTTP_STATUS_BY_ERROR`).
 * Fastify's own refusals (a body too large, JSON that does not parse, a content type it does
 * not read) are answered in the same shape.
 */
export function sendError(reply: FastifyReply, err: unknown, logger: Logger): FastifyReply {
  let e = err;
  if (!isNuropbError(err)) {
    const fastifyCode = (err as { code?: unknown; statusCode?: unknown } | null)?.code;
    const status = (err as { statusCode?: unknown } | null)?.statusCode;
    if (typeof fastifyCode === "string" && typeof status === "number" && status < 500) {
      const message = (err as Error).message;
      e = withStatus(
        status === 413 || status === 415
          ? new NuropbMessageError(message)
          : new NuropbValidationError(message),
        status,
      );
    } else {
      logger.error("unexpected failure", {
        error: err instanceof Error ? err.message : String(err),
      });
    }
  }
  return sendJson(reply, httpStatusOf(e), errorJson(e));
}

/**
 * The REST routes: `GET /api` (the exposed services), `GET /api/{service}` (its exposed
 * description), `POST /api/{service}/{method}` (a request: JSON body = params, answers the
 * result), `POST /command/{service}/{method}` (202), `POST /publish/{topic}` (JSON body = the
 * event, 202), `GET /stats/{service}` (what it answers `nuropb_stats` with, its exposed methods
 * only; `stats: null` when it offers none) and `GET /openapi.json`.
 */
export function registerHttpRoutes(
  app: FastifyInstance,
  ops: GatewayOperations,
  settings: { readonly title: string; readonly bodyLimitBytes: number; readonly logger: Logger },
): void {
  const { logger } = settings;
  // Bodies are read as NuroPb reads them: exact big integers, a depth limit.
  app.removeContentTypeParser(["application/json"]);
  app.addContentTypeParser(
    /^application\/(.+\+)?json(;.*)?$/i,
    { parseAs: "string", bodyLimit: settings.bodyLimitBytes },
    (_req, body, done) => {
      const text = typeof body === "string" ? body : body.toString("utf8");
      if (text.trim() === "") return done(null, undefined);
      try {
        done(null, parseWireJson(text));
      } catch (err) {
        done(
          withStatus(
            new NuropbValidationError(`the body is not JSON: ${(err as Error).message}`),
            400,
          ),
        );
      }
    },
  );
  app.setErrorHandler((err, _req, reply) => sendError(reply, err, logger));
  app.setNotFoundHandler((req, reply) =>
    sendError(
      reply,
      withStatus(
        new NuropbValidationError(`no route ${req.method} ${req.url.split("?")[0] ?? ""}`),
        404,
      ),
      logger,
    ),
  );

  app.get(HttpPath.api, async (_req, reply) =>
    sendJson(reply, 200, toWireJson({ services: ops.serviceNames() })),
  );

  app.get<{ Params: { service: string } }>(`${HttpPath.api}/:service`, async (req, reply) => {
    const view = await ops.describe(req.params.service, callerOf(req));
    return sendJson(
      reply,
      200,
      toWireJson({
        ...view.description,
        gateway: {
          requests: view.requests,
          commands: view.commands,
          sealed: view.sealed,
          context_token_key: view.contextTokenKey,
        },
      }),
    );
  });

  app.get<{ Params: { service: string } }>(`${HttpPath.stats}/:service`, async (req, reply) => {
    const view = await ops.stats(req.params.service, callerOf(req));
    return sendJson(reply, 200, toWireJson(view));
  });

  app.post<{ Params: { service: string; method: string } }>(
    `${HttpPath.api}/:service/:method`,
    async (req, reply) => {
      const abort = new AbortController();
      // A client that goes away stops the wait (the call itself may still run on the mesh). The
      // response's "close" fires then; the request's fires as soon as its body has been read.
      const onClose = (): void => {
        if (!reply.raw.writableFinished) {
          abort.abort(new NuropbMessageError("the HTTP client went away"));
        }
      };
      reply.raw.once("close", onClose);
      try {
        const { result, traceId } = await ops.request(
          {
            service: req.params.service,
            method: req.params.method,
            params: req.body,
            ttlMs: ttlHeader(req),
            traceId: header(req, TRACE_HEADER),
          },
          callerOf(req),
          abort.signal,
        );
        reply.header(TRACE_HEADER, traceId);
        return sendJson(reply, 200, toWireJson(result ?? null));
      } finally {
        reply.raw.off("close", onClose);
      }
    },
  );

  app.post<{ Params: { service: string; method: string } }>(
    `${HttpPath.command}/:service/:method`,
    async (req, reply) => {
      const { traceId } = await ops.command(
        {
          service: req.params.service,
          method: req.params.method,
          params: req.body,
          ttlMs: ttlHeader(req),
          traceId: header(req, TRACE_HEADER),
        },
        callerOf(req),
      );
      reply.header(TRACE_HEADER, traceId);
      return reply.code(202).send();
    },
  );

  app.post<{ Params: { topic: string } }>(`${HttpPath.publish}/:topic`, async (req, reply) => {
    const { traceId } = await ops.publish(
      req.params.topic,
      req.body,
      header(req, TRACE_HEADER),
      callerOf(req),
    );
    reply.header(TRACE_HEADER, traceId);
    return reply.code(202).send();
  });

  app.get(HttpPath.openapi, async (req, reply) => {
    const doc = await buildOpenApi(ops, { title: settings.title });
    void req;
    // The schemas come from the services' describes: a Python `int` bound may be a bigint.
    return sendJson(reply, 200, toWireJson(doc));
  });
}
