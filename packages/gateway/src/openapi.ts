import type { JSONSchema, MethodDescription } from "@nuropb/core";
import { HTTP_STATUS_BY_ERROR } from "./error-status.ts";
import type { ExposedView, GatewayOperations } from "./operations.ts";

/** An OpenAPI 3.1 document, as JSON. */
export type OpenApiDocument = Record<string, unknown>;

const ERROR_RESPONSE = { $ref: "#/components/responses/NuropbError" };
const seg = (s: string): string => encodeURIComponent(s);

function errorResponses(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const statuses = new Set([...Object.values(HTTP_STATUS_BY_ERROR), 404, 413, 429, 500]);
  for (const s of [...statuses].sort()) out[String(s)] = ERROR_RESPONSE;
  return out;
}

/** A JSON Schema as an OpenAPI 3.1 schema object (the same dialect, minus `$schema`/`$id`). */
function schemaOf(schema: JSONSchema | undefined): Record<string, unknown> {
  if (schema === undefined) return {};
  const { $schema: _s, $id: _i, ...rest } = schema as Record<string, unknown>;
  return rest;
}

function operation(
  view: ExposedView,
  method: string,
  m: MethodDescription | undefined,
  kind: "request" | "command",
): Record<string, unknown> {
  const summary = m?.description ?? undefined;
  const flags = [
    m?.requires_authorization === true ? "needs a token (`Authorization`)" : undefined,
    m?.requires_encryption === true
      ? "requires encryption: the gateway seals the call to the service"
      : undefined,
  ].filter((x) => x !== undefined);
  const op: Record<string, unknown> = {
    operationId: `${kind === "request" ? "call" : "command"}.${view.service}.${method}`,
    tags: [view.service],
    ...(summary !== undefined ? { summary } : {}),
    description: [
      kind === "request"
        ? `Calls \`${view.service}.${method}\` on the mesh and answers its result.`
        : `Sends \`${method}\` to \`${view.service}\` as a command (no result): 202 once the mesh has it.`,
      ...flags,
      `The \`Authorization\` header travels to the service as \`context.${view.contextTokenKey}\`.`,
    ].join(" "),
    parameters: [
      { $ref: "#/components/parameters/Ttl" },
      { $ref: "#/components/parameters/TraceId" },
    ],
    requestBody: {
      required: false,
      content: { "application/json": { schema: schemaOf(m?.parameters ?? { type: "object" }) } },
    },
    responses: {
      ...(kind === "request"
        ? {
            "200": {
              description: "the method's result",
              headers: { "x-nuropb-trace-id": { $ref: "#/components/headers/TraceId" } },
              content: { "application/json": { schema: schemaOf(m?.result) } },
            },
          }
        : { "202": { description: "the mesh has the command" } }),
      ...errorResponses(),
    },
    security: m?.requires_authorization === true ? [{ token: [] }] : [{}, { token: [] }],
  };
  return op;
}

/**
 * Builds the OpenAPI 3.1 document of what the gateway exposes, from the live descriptions of
 * the exposed services (a service that does not answer is listed in `x-nuropb-unavailable`).
 */
export async function buildOpenApi(
  ops: GatewayOperations,
  settings: { readonly title: string },
): Promise<OpenApiDocument> {
  const paths: Record<string, unknown> = {};
  const tags: Record<string, unknown>[] = [];
  const unavailable: string[] = [];
  const views = await Promise.all(
    ops.serviceNames().map((name) =>
      ops.view(name).then(
        (v) => v,
        () => {
          unavailable.push(name);
          return undefined;
        },
      ),
    ),
  );
  for (const view of views) {
    if (view === undefined) continue;
    const d = view.description;
    tags.push({
      name: view.service,
      ...(d.description !== null ? { description: d.description } : {}),
    });
    for (const method of view.requests) {
      paths[`/api/${seg(view.service)}/${seg(method)}`] = {
        post: operation(view, method, d.methods[method], "request"),
      };
    }
    for (const method of view.commands) {
      paths[`/command/${seg(view.service)}/${seg(method)}`] = {
        post: operation(view, method, d.methods[method], "command"),
      };
    }
  }
  const publish = ops.publishPatterns;
  if (publish.length > 0) {
    paths["/publish/{topic}"] = {
      post: {
        operationId: "publish",
        tags: ["events"],
        summary: "Publish an event",
        description: `Publishes the JSON body as an event to \`topic\`, which must match one of: ${publish.map((p) => `\`${p}\``).join(", ")}. 202 once the mesh has it.`,
        parameters: [
          {
            name: "topic",
            in: "path",
            required: true,
            schema: { type: "string" },
            example: publish[0]?.replaceAll("#", "x").replaceAll("*", "x"),
          },
          { $ref: "#/components/parameters/TraceId" },
        ],
        requestBody: { required: false, content: { "application/json": { schema: {} } } },
        responses: { "202": { description: "the mesh has the event" }, ...errorResponses() },
        security: [{}, { token: [] }],
      },
    };
    tags.push({ name: "events", description: "Events the gateway lets clients publish" });
  }
  return {
    openapi: "3.1.0",
    info: {
      title: settings.title,
      version: "1",
      description:
        "Generated from the live descriptions of the services this nuropb gateway exposes. Errors are answered with an HTTP status and the NuroPb error object.",
    },
    tags,
    paths,
    components: {
      schemas: {
        NuropbError: {
          type: "object",
          required: ["error", "description"],
          properties: {
            error: {
              type: "string",
              description: "the error's class name, e.g. NuropbAuthorizationError",
            },
            description: { type: "string" },
            retryable: { type: "boolean" },
            details: { type: "object" },
          },
        },
      },
      responses: {
        NuropbError: {
          description: "a NuroPb error",
          content: {
            "application/json": { schema: { $ref: "#/components/schemas/NuropbError" } },
          },
        },
      },
      parameters: {
        Ttl: {
          name: "x-nuropb-ttl-ms",
          in: "header",
          required: false,
          description: "time-to-live of the call and how long to wait for it, in ms",
          schema: { type: "integer", minimum: 1 },
        },
        TraceId: {
          name: "x-nuropb-trace-id",
          in: "header",
          required: false,
          description: "trace id to send with the call (default: a fresh one)",
          schema: { type: "string" },
        },
      },
      headers: {
        TraceId: { description: "the call's trace id", schema: { type: "string" } },
      },
      securitySchemes: {
        token: {
          type: "apiKey",
          in: "header",
          name: "Authorization",
          description: "passed verbatim to the service in the call's context (e.g. `Bearer …`)",
        },
      },
    },
    ...(unavailable.length > 0 ? { "x-nuropb-unavailable": unavailable.sort() } : {}),
  };
}
