// The nuropb mesh explorer: the exposed services, a form per method generated from its JSON
// Schema, calls through the gateway's REST routes, each service's stats (nuropb_stats, through
// GET /stats/{service}), and a live view of events through its WebSocket. Plain browser JavaScript, no build, no CDN. Every value from the mesh is written
// with textContent, never as HTML.

const base = new URL("../", window.location.href);
const tokenInput = document.getElementById("token");

function token() {
  const t = tokenInput.value.trim();
  return t === "" ? undefined : t;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== undefined) node.append(c);
  return node;
}

async function getJson(path) {
  const headers = {};
  if (token() !== undefined) headers.authorization = token();
  const res = await fetch(new URL(path, base), { headers });
  const body = await res.json();
  if (!res.ok)
    throw Object.assign(new Error(body.description ?? res.statusText), {
      body,
      status: res.status,
    });
  return body;
}

// ---- forms from JSON Schema -------------------------------------------------------------------

/** The JSON type a property schema asks for ("string", "integer"…, or "json" for anything else). */
function kindOf(schema) {
  if (Array.isArray(schema.enum)) return "enum";
  const t = Array.isArray(schema.type) ? schema.type.find((x) => x !== "null") : schema.type;
  return ["string", "number", "integer", "boolean"].includes(t) ? t : "json";
}

function fieldFor(name, schema, required) {
  const id = `f-${Math.random().toString(36).slice(2)}`;
  const kind = kindOf(schema);
  let input;
  if (kind === "boolean") {
    input = el("input", { type: "checkbox", name, id });
    if (schema.default === true) input.checked = true;
  } else if (kind === "enum") {
    input = el("select", { name, id });
    if (!required) input.append(el("option", { value: "", text: "" }));
    schema.enum.forEach((v, i) =>
      input.append(el("option", { value: String(i), text: JSON.stringify(v) })),
    );
  } else if (kind === "json") {
    input = el("textarea", { name, id, placeholder: "JSON" });
    if (schema.default !== undefined) input.value = JSON.stringify(schema.default);
  } else {
    input = el("input", {
      name,
      id,
      type: kind === "string" ? "text" : "number",
      step: kind === "integer" ? "1" : kind === "number" ? "any" : undefined,
      placeholder: schema.format ?? kind,
    });
    if (schema.default !== undefined && schema.default !== null)
      input.value = String(schema.default);
  }
  input.dataset.kind = kind;
  const label = el("label", { for: id, text: required ? `${name} *` : name });
  if (schema.description) label.title = schema.description;
  return el("div", { class: "field" }, label, input);
}

/** The params a form holds, by its schema. @throws Error naming a field that does not parse. */
function paramsOf(form, schema) {
  const params = {};
  for (const input of form.querySelectorAll("[data-kind]")) {
    const name = input.name;
    const kind = input.dataset.kind;
    if (kind === "boolean") {
      params[name] = input.checked;
      continue;
    }
    const raw = input.value;
    if (raw === "") continue;
    if (kind === "string") params[name] = raw;
    else if (kind === "number" || kind === "integer") params[name] = Number(raw);
    else if (kind === "enum") params[name] = schema.properties[name].enum[Number(raw)];
    else {
      try {
        params[name] = JSON.parse(raw);
      } catch {
        throw new Error(`${name}: not JSON`);
      }
    }
  }
  return params;
}

// ---- services and methods ---------------------------------------------------------------------

function methodSection(service, name, method, kind) {
  const schema = method?.parameters ?? { type: "object", properties: {} };
  const properties = schema.properties ?? {};
  const required = new Set(schema.required ?? []);
  const form = el("form", { "data-method": `${service}.${name}`, "data-kind": kind });
  const names = Object.keys(properties);
  for (const p of names) form.append(fieldFor(p, properties[p], required.has(p)));
  if (names.length === 0 && schema.additionalProperties !== false) {
    form.append(fieldFor("params", { description: "the params object" }, false));
    form.dataset.whole = "true";
  }
  const output = el("pre", { "data-output": `${service}.${name}`, hidden: true });
  form.append(el("button", { type: "submit", text: kind === "request" ? "Call" : "Send command" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    output.hidden = false;
    output.className = "";
    output.textContent = "…";
    let params;
    try {
      params = paramsOf(form, schema);
      if (form.dataset.whole === "true") params = params.params ?? {};
    } catch (err) {
      output.className = "error";
      output.textContent = err.message;
      return;
    }
    const path = kind === "request" ? "api" : "command";
    const headers = { "content-type": "application/json" };
    if (token() !== undefined) headers.authorization = token();
    try {
      const res = await fetch(
        new URL(`${path}/${encodeURIComponent(service)}/${encodeURIComponent(name)}`, base),
        {
          method: "POST",
          headers,
          body: JSON.stringify(params),
        },
      );
      const text = await res.text();
      if (res.ok) {
        output.dataset.status = String(res.status);
        output.textContent =
          kind === "request" ? JSON.stringify(JSON.parse(text), null, 2) : `${res.status} sent`;
      } else {
        output.className = "error";
        output.dataset.status = String(res.status);
        output.textContent = `${res.status} ${JSON.stringify(JSON.parse(text), null, 2)}`;
      }
    } catch (err) {
      output.className = "error";
      output.textContent = String(err);
    }
  });
  const flags = [
    kind === "command" ? "command" : undefined,
    method?.requires_authorization ? "needs a token" : undefined,
    method?.requires_encryption ? "requires encryption" : undefined,
  ].filter(Boolean);
  return el(
    "div",
    { class: "method" },
    el("h3", { text: name }),
    flags.length > 0 ? el("div", { class: "flags", text: flags.join(" · ") }) : undefined,
    method?.description ? el("p", { text: method.description }) : undefined,
    form,
    output,
  );
}

// ---- stats -------------------------------------------------------------------------------------

/** A duration in ms as "3 h 4 min", "2 min 5 s" or "7 s". */
function duration(ms) {
  const s = Math.floor(ms / 1000);
  const [d, h, m] = [Math.floor(s / 86400), Math.floor(s / 3600) % 24, Math.floor(s / 60) % 60];
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

function statsTable(stats) {
  const head = el(
    "tr",
    {},
    ...["method", "calls", "errors", "p50 ms", "p99 ms", "last error"].map((t) =>
      el("th", { scope: "col", text: t }),
    ),
  );
  const rows = Object.entries(stats.methods).map(([name, m]) => {
    const last = m.last_error;
    return el(
      "tr",
      { "data-method": name },
      el("th", { scope: "row", text: name }),
      el("td", { "data-field": "calls", text: String(m.num_requests) }),
      el("td", { "data-field": "errors", text: String(m.num_errors) }),
      el("td", { "data-field": "p50", text: String(m.processing_time_ms.p50) }),
      el("td", { "data-field": "p99", text: String(m.processing_time_ms.p99) }),
      el("td", {
        "data-field": "last-error",
        text: last === null ? "" : `${last.error}: ${last.description}`,
        title: last === null ? undefined : last.at,
      }),
    );
  });
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
}

/** The service's stats, with a refresh button; loads them at once. */
function statsPanel(service) {
  const body = el("div", { "data-stats-body": "" });
  const refresh = el("button", { type: "button", text: "Refresh stats" });
  const panel = el(
    "details",
    { class: "stats", "data-stats": service, open: true },
    el("summary", { text: "Stats" }),
    refresh,
    body,
  );
  let loads = 0;
  async function load() {
    refresh.disabled = true;
    try {
      const { stats } = await getJson(`stats/${encodeURIComponent(service)}`);
      if (stats === null) {
        body.replaceChildren(
          el("p", { class: "flags", "data-stats-none": "", text: "this service offers no stats" }),
        );
      } else {
        const other = stats.other_method_calls;
        const summary = [
          `up ${duration(stats.uptime_ms)}`,
          stats.connected ? "connected" : "not connected",
          `${stats.transport.kind} ${stats.transport.state}`,
          `${stats.in_flight} in flight`,
          other > 0 ? `${other} calls of other methods` : undefined,
        ].filter(Boolean);
        body.replaceChildren(
          el("p", { class: "flags", "data-stats-summary": "", text: summary.join(" · ") }),
          Object.keys(stats.methods).length === 0
            ? el("p", { class: "flags", text: "no calls yet" })
            : statsTable(stats),
        );
      }
    } catch (err) {
      body.replaceChildren(
        el("p", { class: "error", text: `cannot read the stats: ${err.message}` }),
      );
    } finally {
      refresh.disabled = false;
      panel.dataset.loads = String(++loads);
    }
  }
  refresh.addEventListener("click", () => void load());
  void load();
  return panel;
}

async function showService(container, service) {
  const box = el(
    "article",
    { class: "service", "data-service": service },
    el("h2", { text: service }),
  );
  container.append(box);
  let d;
  try {
    d = await getJson(`api/${encodeURIComponent(service)}`);
  } catch (err) {
    box.append(el("p", { class: "error", text: `cannot describe ${service}: ${err.message}` }));
    box.append(statsPanel(service));
    return;
  }
  if (d.description) box.append(el("p", { text: d.description }));
  if (d.service_version)
    box.append(el("p", { class: "flags", text: `version ${d.service_version}` }));
  box.append(statsPanel(service));
  for (const m of d.gateway.requests)
    box.append(methodSection(service, m, d.methods[m], "request"));
  for (const m of d.gateway.commands)
    box.append(methodSection(service, m, d.methods[m], "command"));
}

async function showServices() {
  const container = document.getElementById("services");
  const status = document.getElementById("services-status");
  try {
    const { services } = await getJson("api");
    status.textContent = services.length === 0 ? "This gateway exposes no services." : "";
    for (const s of services) await showService(container, s);
    container.dataset.ready = "true";
  } catch (err) {
    status.textContent = `cannot list the services: ${err.message}`;
  }
}

// ---- events -----------------------------------------------------------------------------------

let socket;
let nextId = 0;
const subscriptions = new Map();
const list = document.getElementById("event-list");
const eventsStatus = document.getElementById("events-status");

function openSocket() {
  if (socket !== undefined && socket.readyState <= 1) return socket;
  const url = new URL("ws", base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(url);
  socket.addEventListener("open", () => {
    if (token() !== undefined)
      socket.send(JSON.stringify({ id: `a${++nextId}`, type: "authenticate", token: token() }));
    for (const [id, pattern] of subscriptions)
      socket.send(JSON.stringify({ id, type: "subscribe", pattern }));
  });
  socket.addEventListener("message", (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "event") {
      const item = el("li", { "data-topic": m.topic });
      item.textContent = `${new Date().toLocaleTimeString()} ${m.topic} ${JSON.stringify(m.event)}`;
      list.prepend(item);
      while (list.children.length > 200) list.lastChild.remove();
    } else if (m.type === "ok" && subscriptions.has(m.id)) {
      eventsStatus.textContent = `subscribed to ${subscriptions.get(m.id)}`;
    } else if (m.type === "error" && subscriptions.has(m.id)) {
      eventsStatus.textContent = `${m.status} ${m.error.error}: ${m.error.description}`;
      subscriptions.delete(m.id);
    }
  });
  socket.addEventListener("close", () => {
    if (subscriptions.size > 0) {
      eventsStatus.textContent = "reconnecting…";
      setTimeout(openSocket, 1000);
    }
  });
  return socket;
}

document.getElementById("subscribe-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const pattern = document.getElementById("pattern").value.trim();
  if (pattern === "") return;
  const id = `s${++nextId}`;
  subscriptions.set(id, pattern);
  eventsStatus.textContent = `subscribing to ${pattern}…`;
  const ws = openSocket();
  if (ws.readyState === 1) ws.send(JSON.stringify({ id, type: "subscribe", pattern }));
});

void showServices();
