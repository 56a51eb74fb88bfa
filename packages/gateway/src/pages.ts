import { createRequire } from "node:module";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import fastifyStatic from "@fastify/static";
import type { FastifyInstance } from "fastify";

/** Where the pages live. */
export const PagePath = { explorer: "/explorer/", docs: "/docs/" } as const;

const ASSETS = fileURLToPath(new URL("../assets/", import.meta.url));

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${String(c.charCodeAt(0))};`);
}

/**
 * The API page: Swagger UI from the installed `swagger-ui-dist` (no CDN), reading
 * `/openapi.json`; the validator badge, which would call swagger.io, is off.
 */
function docsPage(title: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)} — API</title>
<link rel="stylesheet" href="./swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="./swagger-ui-bundle.js"></script>
<script src="./init.js"></script>
</body>
</html>
`;
}

const DOCS_INIT = `window.ui = SwaggerUIBundle({
  url: new URL("../openapi.json", window.location.href).href,
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  tryItOutEnabled: true,
});
`;

/** Serves the mesh explorer at `/explorer/` and the API page at `/docs/`. */
export async function registerPages(app: FastifyInstance, title: string): Promise<void> {
  const swaggerDir = dirname(
    createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"),
  );
  app.get("/", (_req, reply) => reply.redirect(PagePath.explorer));
  app.get("/docs", (_req, reply) => reply.redirect(PagePath.docs));
  app.get("/explorer", (_req, reply) => reply.redirect(PagePath.explorer));
  app.get(PagePath.docs, (_req, reply) =>
    reply.type("text/html; charset=utf-8").send(docsPage(title)),
  );
  app.get(`${PagePath.docs}init.js`, (_req, reply) =>
    reply.type("text/javascript; charset=utf-8").send(DOCS_INIT),
  );
  await app.register(fastifyStatic, {
    root: swaggerDir,
    prefix: PagePath.docs,
    allowedPath: (path) => /^\/(swagger-ui(-bundle)?\.(css|js)|favicon-\d+x\d+\.png)$/.test(path),
    index: false,
    wildcard: true,
  });
  await app.register(fastifyStatic, {
    root: `${ASSETS}explorer`,
    prefix: PagePath.explorer,
    decorateReply: false,
    index: ["index.html"],
  });
}
