import { STATS_METHOD } from "@nuropb/core";
import type { MethodStats, ServiceDescription, ServiceStatsReport } from "@nuropb/core";
import {
  NuropbAuthorizationError,
  NuropbError,
  NuropbHandlingError,
  NuropbMessageError,
  NuropbValidationError,
  assertTopicPattern,
  fromErrorPayload,
  isNuropbError,
  newId,
  topicMatches,
} from "@nuropb/protocol";
import type { Context, Logger } from "@nuropb/protocol";
import { withStatus } from "./error-status.ts";
import type { MeshLink } from "./mesh-link.ts";
import type { GatewayAuthorizeRequest, ResolvedOptions, ResolvedService } from "./options.ts";
import { assertTopic, patternCovers } from "./topic-patterns.ts";

/** Who is asking, as far as the gateway can tell. */
export interface Caller {
  /** The caller's token (HTTP `Authorization`, the WebSocket token), undefined when none. */
  readonly token: string | undefined;
  readonly via: "http" | "websocket";
  readonly remoteAddress: string;
}

/** A call as either front end hands it over. */
export interface CallInput {
  readonly service: string;
  readonly method: string;
  readonly params: unknown;
  /** Ttl as the caller asked for it; undefined: the gateway's default. */
  readonly ttlMs: number | undefined;
  readonly traceId: string | undefined;
}

/** What the gateway shows of one exposed service. */
export interface ExposedView {
  readonly service: string;
  /** The live description, with only the exposed methods. */
  readonly description: ServiceDescription;
  /** Methods exposed as requests, sorted. */
  readonly requests: readonly string[];
  /** Methods exposed as commands, sorted. */
  readonly commands: readonly string[];
  readonly contextTokenKey: string;
  readonly sealed: boolean;
}

/**
 * What the gateway shows of a service's `nuropb_stats` answer: the report with only the exposed
 * methods by name, or null when the service offers no stats (a Python NuroPb service answers
 * `NuropbHandlingError`, unknown method).
 */
export interface StatsView {
  readonly service: string;
  readonly stats: ServiceStatsReport | null;
}

const TRACE_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * Every operation the gateway offers, with its checks in one place (exposure, input, the
 * `authorize` hook, ttl), shared by the HTTP routes and the WebSocket.
 */
export class GatewayOperations {
  readonly #options: ResolvedOptions;
  readonly #mesh: MeshLink;
  readonly #logger: Logger;
  /** Stats requests on their way, by service: callers asking at once share one. */
  readonly #statsInFlight = new Map<string, Promise<StatsView>>();

  constructor(options: ResolvedOptions, mesh: MeshLink) {
    this.#options = options;
    this.#mesh = mesh;
    this.#logger = options.logger;
  }

  /** Names of the exposed services, sorted. */
  serviceNames(): readonly string[] {
    return [...this.#options.services.keys()].sort();
  }

  /** Topic patterns clients may publish to. */
  get publishPatterns(): readonly string[] {
    return this.#options.publish;
  }

  /** Topic patterns clients may subscribe within. */
  get subscribePatterns(): readonly string[] {
    return this.#options.subscribe;
  }

  /**
   * The exposed part of a service's live description.
   * @throws NuropbHandlingError (404) for a service that is not exposed; the describe's error.
   */
  async view(service: string): Promise<ExposedView> {
    const spec = this.#service(service);
    const d = await this.#mesh.describe(service);
    const pick = (set: ReadonlySet<string> | "*"): string[] =>
      set === "*" ? Object.keys(d.methods).sort() : [...set].sort();
    const requests = pick(spec.requests);
    const commands = pick(spec.commands);
    const shown = new Set([...requests, ...commands]);
    const methods = Object.fromEntries(Object.entries(d.methods).filter(([m]) => shown.has(m)));
    return {
      service,
      description: {
        ...d,
        methods,
        encrypted_methods: Object.values(methods).some((m) => m.requires_encryption),
      },
      requests,
      commands,
      contextTokenKey: spec.contextTokenKey,
      sealed: spec.sealed,
    };
  }

  /**
   * The exposed description of a service, after the `authorize` hook.
   * @throws as {@link view}; NuropbAuthorizationError when the hook refuses.
   */
  async describe(service: string, caller: Caller): Promise<ExposedView> {
    this.#service(service);
    await this.#authorize({ kind: "describe", service, sealed: false }, caller);
    return this.view(service);
  }

  /**
   * What the service answers `nuropb_stats` with, after the `authorize` hook (kind "stats"),
   * with only its exposed methods named: the calls of the others are added to
   * `other_method_calls`, as core counts hidden methods. No token goes with the request.
   * @throws NuropbHandlingError (404) for a service that is not exposed; NuropbAuthorizationError
   *   when the hook refuses; the request's errors (not delivered, timeout); NuropbMessageError
   *   (502) for an answer that is not a stats report.
   */
  async stats(service: string, caller: Caller): Promise<StatsView> {
    const spec = this.#service(service);
    await this.#authorize({ kind: "stats", service, sealed: false }, caller);
    let pending = this.#statsInFlight.get(service);
    if (pending === undefined) {
      pending = this.#askStats(spec).finally(() => this.#statsInFlight.delete(service));
      this.#statsInFlight.set(service, pending);
    }
    return pending;
  }

  async #askStats(spec: ResolvedService): Promise<StatsView> {
    const service = spec.name;
    const response = await this.#mesh.participant.request(
      service,
      STATS_METHOD,
      {},
      {},
      { ttlMs: this.#options.describeTtlMs, rpcResponse: false },
    );
    if (response.error !== null) {
      // An unknown method: a Python NuroPb service, or one from before nuropb_stats.
      if (response.error.error === NuropbHandlingError.wireName) return { service, stats: null };
      throw fromErrorPayload(response.error);
    }
    const report = response.result;
    if (!isStatsReport(report)) {
      throw withStatus(
        new NuropbMessageError(`${service} answered ${STATS_METHOD} with something else`),
        502,
      );
    }
    const shown = await this.#exposedMethods(spec);
    const methods: Record<string, MethodStats> = {};
    let other = report.other_method_calls;
    for (const [name, figures] of Object.entries(report.methods)) {
      if (shown.has(name)) methods[name] = figures;
      else other += figures.num_requests;
    }
    // Field by field rather than a spread: a field a later core adds reaches callers only once
    // the gateway knows that it names nothing unexposed.
    return {
      service,
      stats: {
        type: report.type,
        service_name: report.service_name,
        instance_id: report.instance_id,
        service_version: report.service_version,
        started: report.started,
        uptime_ms: report.uptime_ms,
        connected: report.connected,
        transport: { kind: report.transport.kind, state: report.transport.state },
        in_flight: report.in_flight,
        other_method_calls: other,
        methods,
      },
    };
  }

  /** The methods exposed as requests or commands (`"*"`: those the description lists). */
  async #exposedMethods(spec: ResolvedService): Promise<ReadonlySet<string>> {
    const described =
      spec.requests === "*" || spec.commands === "*"
        ? Object.keys((await this.#mesh.describe(spec.name)).methods)
        : [];
    const pick = (set: ReadonlySet<string> | "*"): Iterable<string> =>
      set === "*" ? described : set;
    return new Set([...pick(spec.requests), ...pick(spec.commands)]);
  }

  /**
   * Sends a request and resolves with its result.
   * @throws NuropbHandlingError (404) when it is not exposed; NuropbValidationError for bad
   *   input; NuropbAuthorizationError when the hook refuses; the call's own errors.
   */
  async request(
    input: CallInput,
    caller: Caller,
    signal?: AbortSignal,
  ): Promise<{ readonly result: unknown; readonly traceId: string }> {
    const { spec, params, ttlMs, traceId } = await this.#prepare("request", input, caller);
    const result = await this.#mesh.participant.request(
      input.service,
      input.method,
      params,
      this.#context(spec, caller),
      { ttlMs, traceId, ...(signal === undefined ? {} : { signal }) },
    );
    return { result, traceId };
  }

  /**
   * Sends a command; resolves when the transport has it.
   * @throws as {@link request}.
   */
  async command(input: CallInput, caller: Caller): Promise<{ readonly traceId: string }> {
    const { spec, params, ttlMs, traceId } = await this.#prepare("command", input, caller);
    await this.#mesh.participant.command(
      input.service,
      input.method,
      params,
      this.#context(spec, caller),
      { ttlMs, traceId },
    );
    return { traceId };
  }

  /**
   * Publishes an event. Its context is empty: a token given to the gateway never travels in
   * an event, which every subscriber reads.
   * @throws NuropbValidationError for a bad topic; NuropbAuthorizationError (403) for a topic
   *   outside the exposed ones or refused by the hook.
   */
  async publish(
    topic: unknown,
    event: unknown,
    traceId: string | undefined,
    caller: Caller,
  ): Promise<{ readonly traceId: string }> {
    try {
      assertTopic(topic);
    } catch (err) {
      throw new NuropbValidationError((err as Error).message);
    }
    if (!this.#options.publish.some((p) => topicMatches(p, topic))) {
      throw new NuropbAuthorizationError(`publishing to '${topic}' is not exposed`);
    }
    await this.#authorize({ kind: "publish", topic, sealed: false }, caller);
    const id = this.#traceId(traceId);
    await this.#mesh.participant.publishEvent(topic, event ?? null, {}, { traceId: id });
    return { traceId: id };
  }

  /**
   * Checks a subscription: a well-formed pattern within an exposed one, allowed by the hook.
   * @throws NuropbValidationError; NuropbAuthorizationError (403).
   */
  async checkSubscribe(pattern: unknown, caller: Caller): Promise<string> {
    if (typeof pattern !== "string" || pattern === "") {
      throw new NuropbValidationError("a subscription needs a topic pattern");
    }
    try {
      assertTopicPattern(pattern);
    } catch (err) {
      throw new NuropbValidationError((err as Error).message);
    }
    if (!this.#options.subscribe.some((p) => patternCovers(p, pattern))) {
      throw new NuropbAuthorizationError(
        `the pattern '${pattern}' is not within the exposed topics (${this.#options.subscribe.join(", ") || "none"})`,
      );
    }
    await this.#authorize({ kind: "subscribe", topic: pattern, sealed: false }, caller);
    return pattern;
  }

  /**
   * Checks a sealed call: the service exposes sealed calls and the hook allows it (the method
   * is unknown to the gateway).
   * @throws NuropbHandlingError (404); NuropbAuthorizationError.
   */
  async checkSealed(
    kind: "request" | "command",
    service: string,
    caller: Caller,
  ): Promise<ResolvedService> {
    const spec = this.#service(service);
    if (!spec.sealed) {
      throw withStatus(
        new NuropbHandlingError(`sealed calls to ${service} are not exposed by this gateway`),
        404,
      );
    }
    await this.#authorize({ kind, service, sealed: true }, caller);
    return spec;
  }

  /**
   * The ttl to use: the caller's, checked, or the default.
   * @throws NuropbValidationError for one that is not a whole number from 1 to `maxTtlMs`.
   */
  ttl(asked: unknown): number {
    if (asked === undefined) return this.#options.defaultTtlMs;
    if (
      typeof asked !== "number" ||
      !Number.isSafeInteger(asked) ||
      asked < 1 ||
      asked > this.#options.maxTtlMs
    ) {
      throw new NuropbValidationError(
        `the ttl must be a whole number of ms from 1 to ${String(this.#options.maxTtlMs)}, got ${String(asked)}`,
      );
    }
    return asked;
  }

  #traceId(asked: unknown): string {
    if (asked === undefined) return newId();
    if (typeof asked !== "string" || !TRACE_ID.test(asked)) {
      throw new NuropbValidationError(
        "a trace id must be 1 to 128 letters, digits, '_', '.', ':' or '-'",
      );
    }
    return asked;
  }

  async #prepare(
    kind: "request" | "command",
    input: CallInput,
    caller: Caller,
  ): Promise<{
    spec: ResolvedService;
    params: Record<string, unknown>;
    ttlMs: number;
    traceId: string;
  }> {
    const spec = this.#service(input.service);
    if (typeof input.method !== "string" || input.method === "") {
      throw new NuropbValidationError("a call needs a method name");
    }
    const allowed = kind === "request" ? spec.requests : spec.commands;
    const exposed =
      allowed === "*"
        ? Object.hasOwn((await this.#mesh.describe(input.service)).methods, input.method)
        : allowed.has(input.method);
    if (!exposed) throw this.#notExposed(`${input.service}.${input.method} as a ${kind}`);
    const params = input.params ?? {};
    if (typeof params !== "object" || params === null || Array.isArray(params)) {
      throw new NuropbValidationError("params must be a JSON object");
    }
    const ttlMs = this.ttl(input.ttlMs);
    const traceId = this.#traceId(input.traceId);
    await this.#authorize(
      { kind, service: input.service, method: input.method, sealed: false },
      caller,
    );
    return { spec, params: params as Record<string, unknown>, ttlMs, traceId };
  }

  #context(spec: ResolvedService, caller: Caller): Context {
    return caller.token === undefined ? {} : { [spec.contextTokenKey]: caller.token };
  }

  #service(service: unknown): ResolvedService {
    if (typeof service !== "string" || service === "") {
      throw new NuropbValidationError("a call needs a service name");
    }
    const spec = this.#options.services.get(service);
    if (spec === undefined) throw this.#notExposed(service);
    return spec;
  }

  #notExposed(what: string): NuropbHandlingError {
    // 404, the same for a service that does not exist and one that is not exposed.
    return withStatus(new NuropbHandlingError(`${what} is not exposed by this gateway`), 404);
  }

  async #authorize(
    op: Omit<GatewayAuthorizeRequest, "token" | "via" | "remoteAddress">,
    caller: Caller,
  ): Promise<void> {
    const hook = this.#options.authorize;
    if (hook === undefined) return;
    let verdict: unknown;
    try {
      verdict = await hook({
        ...op,
        token: caller.token,
        via: caller.via,
        remoteAddress: caller.remoteAddress,
      });
    } catch (err) {
      if (isNuropbError(err)) throw err;
      this.#logger.error("the authorize hook threw", {
        kind: op.kind,
        error: err instanceof Error ? err.message : String(err),
      });
      throw new NuropbError("the gateway failed to authorise the call");
    }
    if (verdict !== true) {
      const what =
        op.method === undefined
          ? (op.service ?? op.topic ?? "")
          : `${op.service ?? ""}.${op.method}`;
      throw new NuropbAuthorizationError(`the gateway does not allow this ${op.kind} (${what})`);
    }
  }
}

/** Whether `x` has the shape of a `nuropb_stats` answer, as far as the gateway reads it. */
function isStatsReport(x: unknown): x is ServiceStatsReport {
  if (typeof x !== "object" || x === null) return false;
  const r = x as Record<string, unknown>;
  const t = r.transport as Record<string, unknown> | null | undefined;
  return (
    r.type === "nuropb_stats_response" &&
    typeof r.service_name === "string" &&
    typeof r.other_method_calls === "number" &&
    typeof t === "object" &&
    t !== null &&
    typeof r.methods === "object" &&
    r.methods !== null &&
    !Array.isArray(r.methods) &&
    Object.values(r.methods).every(
      (m) =>
        typeof m === "object" && m !== null && typeof (m as MethodStats).num_requests === "number",
    )
  );
}
