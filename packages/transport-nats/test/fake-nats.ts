import {
  ErrorCode,
  Events,
  headers as natsHeaders,
  NatsError,
  type ConsumerConfig,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type StreamConfig,
} from "nats";

/**
 * A small in-memory stand-in for the `nats` connection: just what the transport and its service
 * consumer use, with hooks to play the server (answer a publish, deliver to an inbox, drop and
 * restore the link). No network.
 */

export interface Published {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: MsgHdrs | undefined;
  readonly reply: string | undefined;
}

type Callback = (err: NatsError | null, msg: Msg) => void;

interface FakeStatus {
  readonly type: string;
  readonly data: string;
}

function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length || (p[i] !== "*" && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

function apiError(code: number, description: string): Error {
  return Object.assign(new Error(description), {
    api_error: { code: 404, err_code: code, description },
  });
}

/** A message as the client hands it to a subscription callback. */
export function fakeMsg(
  subject: string,
  data: Uint8Array | string = new Uint8Array(),
  options: { reply?: string; headers?: MsgHdrs } = {},
): Msg {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return {
    subject,
    sid: 0,
    reply: options.reply ?? "",
    data: bytes,
    headers: options.headers,
    respond: () => true,
    json: <T>() => JSON.parse(new TextDecoder().decode(bytes)) as T,
    string: () => new TextDecoder().decode(bytes),
  } as Msg;
}

/** A JetStream delivery of `stream`/`consumer`, with its `$JS.ACK…` reply subject. */
export function jsDelivery(options: {
  stream: string;
  consumer: string;
  seq: number;
  deliveryCount?: number;
  subject?: string;
  headers?: MsgHdrs;
  data?: Uint8Array | string;
  timestampMs?: number;
}): Msg & { readonly reply: string } {
  const ts = BigInt(options.timestampMs ?? Date.now()) * 1_000_000n;
  const reply = `$JS.ACK.${options.stream}.${options.consumer}.${String(options.deliveryCount ?? 1)}.${String(options.seq)}.${String(options.seq)}.${String(ts)}.0`;
  const msg = fakeMsg(options.subject ?? "mesh.rpc.svc", options.data, {
    reply,
    ...(options.headers !== undefined ? { headers: options.headers } : {}),
  });
  return { ...msg, reply };
}

/** A pull status (408 expired, 409 consumer deleted…), with `Nats-Pending-Messages` if given. */
export function pullStatus(code: number, description: string, pendingMessages?: number): Msg {
  const h = natsHeaders(code, description);
  if (pendingMessages !== undefined) {
    h.set("Nats-Pending-Messages", String(pendingMessages));
    h.set("Nats-Pending-Bytes", "0");
  }
  return fakeMsg("_INBOX.status", new Uint8Array(), { headers: h });
}

/** The JetStream API answers, kept as plain maps. */
export class FakeJetStreamManager {
  readonly streamConfigs = new Map<string, StreamConfig>();
  readonly consumerConfigs = new Map<string, ConsumerConfig>();
  readonly streamUpdates: { name: string; config: Partial<StreamConfig> }[] = [];
  readonly consumerUpdates: { stream: string; name: string; config: Partial<ConsumerConfig> }[] =
    [];

  readonly streams = {
    info: (name: string): Promise<{ config: StreamConfig }> => {
      const config = this.streamConfigs.get(name);
      if (config === undefined) return Promise.reject(apiError(10059, "stream not found"));
      return Promise.resolve({ config: { ...config } });
    },
    add: (config: StreamConfig): Promise<{ config: StreamConfig }> => {
      this.streamConfigs.set(config.name, { ...config });
      return Promise.resolve({ config });
    },
    update: (name: string, config: Partial<StreamConfig>): Promise<{ config: StreamConfig }> => {
      const had = this.streamConfigs.get(name);
      if (had === undefined) return Promise.reject(apiError(10059, "stream not found"));
      this.streamUpdates.push({ name, config });
      const merged = { ...had, ...config };
      this.streamConfigs.set(name, merged);
      return Promise.resolve({ config: merged });
    },
  };

  readonly consumers = {
    info: (stream: string, name: string): Promise<{ config: ConsumerConfig }> => {
      const config = this.consumerConfigs.get(`${stream}/${name}`);
      if (config === undefined) return Promise.reject(apiError(10014, "consumer not found"));
      return Promise.resolve({ config: { ...config } });
    },
    add: (stream: string, config: ConsumerConfig): Promise<{ config: ConsumerConfig }> => {
      this.consumerConfigs.set(`${stream}/${config.durable_name ?? ""}`, { ...config });
      return Promise.resolve({ config });
    },
    update: (
      stream: string,
      name: string,
      config: Partial<ConsumerConfig>,
    ): Promise<{ config: ConsumerConfig }> => {
      const had = this.consumerConfigs.get(`${stream}/${name}`);
      if (had === undefined) return Promise.reject(apiError(10014, "consumer not found"));
      this.consumerUpdates.push({ stream, name, config });
      const merged = { ...had, ...config };
      this.consumerConfigs.set(`${stream}/${name}`, merged);
      return Promise.resolve({ config: merged });
    },
  };
}

/** The connection. Publishes are recorded and handed to subscriptions whose subject matches. */
export class FakeNats {
  readonly published: Published[] = [];
  readonly jsm = new FakeJetStreamManager();
  info = { max_payload: 1_048_576, headers: true };
  readonly #subs: { subject: string; callback: Callback; closed: boolean }[] = [];
  readonly #statusQueue: FakeStatus[] = [];
  #statusWaiter: ((s: FakeStatus | undefined) => void) | undefined;
  #closed = false;
  #resolveClosed!: (err: Error | undefined) => void;
  readonly #closedPromise = new Promise<Error | undefined>((r) => (this.#resolveClosed = r));
  #linkUp = true;

  /** The connection as the transport's code sees it. */
  get nc(): NatsConnection {
    return this as unknown as NatsConnection;
  }

  subscribe(
    subject: string,
    options: { callback: Callback },
  ): { unsubscribe(): void; drain(): Promise<void> } {
    const sub = { subject, callback: options.callback, closed: false };
    this.#subs.push(sub);
    return {
      unsubscribe: () => void (sub.closed = true),
      // As the client: the server has the unsubscription once a flush answers; messages it sent
      // before still reach the callback meanwhile.
      drain: () => {
        const done = (): void => void (sub.closed = true);
        return this.flush().then(done, done);
      },
    };
  }

  /** How many open subscriptions match `subject` (the server's interest in it). */
  interest(subject: string): number {
    return this.#subs.filter((s) => !s.closed && subjectMatches(s.subject, subject)).length;
  }

  /** Delivers `msg` to every open subscription matching `subject`; returns how many got it. */
  deliver(subject: string, msg: Msg): number {
    let n = 0;
    for (const sub of this.#subs) {
      if (!sub.closed && subjectMatches(sub.subject, subject)) {
        n++;
        sub.callback(null, msg);
      }
    }
    return n;
  }

  publish(
    subject: string,
    data: Uint8Array | string = new Uint8Array(),
    options: { headers?: MsgHdrs; reply?: string } = {},
  ): void {
    if (this.#closed) throw NatsError.errorForCode(ErrorCode.ConnectionClosed);
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    const hlen =
      options.headers === undefined
        ? 0
        : (options.headers as unknown as { encode(): Uint8Array }).encode().length;
    if (bytes.length + hlen > this.info.max_payload)
      throw NatsError.errorForCode(ErrorCode.MaxPayloadExceeded);
    // The client copies headers onto the wire: later changes to the object are not sent.
    const headers =
      options.headers === undefined
        ? undefined
        : (() => {
            const h = natsHeaders();
            for (const [k, values] of options.headers) for (const v of values) h.append(k, v);
            return h;
          })();
    this.published.push({ subject, data: bytes, headers, reply: options.reply });
    if (!this.#linkUp) return; // written while reconnecting: lost
    this.deliver(
      subject,
      fakeMsg(subject, bytes, {
        ...(options.reply !== undefined ? { reply: options.reply } : {}),
        ...(headers !== undefined ? { headers } : {}),
      }),
    );
  }

  /** Answers a publish as JetStream does, on its reply subject. */
  ack(p: Published, answer: Record<string, unknown> = { stream: "S", seq: 1 }): void {
    if (p.reply === undefined) throw new Error(`no reply subject on ${p.subject}`);
    this.deliver(p.reply, fakeMsg(p.reply, JSON.stringify(answer)));
  }

  /** For each flush asked for, how many publishes had been written before it. */
  readonly flushes: number[] = [];
  /** While set, a flush (the server's PONG) waits for it. */
  flushGate: Promise<void> | undefined;

  flush(): Promise<void> {
    if (this.#closed) return Promise.reject(NatsError.errorForCode(ErrorCode.ConnectionClosed));
    this.flushes.push(this.published.length);
    return this.flushGate ?? Promise.resolve();
  }

  request(): Promise<Msg> {
    return Promise.reject(NatsError.errorForCode(ErrorCode.NoResponders));
  }

  jetstreamManager(): Promise<FakeJetStreamManager> {
    return Promise.resolve(this.jsm);
  }

  jetstream(): object {
    return {};
  }

  /** The socket drops: the client reports it and writes nothing until {@link reconnect}. */
  disconnect(): void {
    this.#linkUp = false;
    this.#pushStatus({ type: Events.Disconnect, data: "fake" });
  }

  reconnect(): void {
    this.#linkUp = true;
    this.#pushStatus({ type: Events.Reconnect, data: "fake" });
  }

  #pushStatus(s: FakeStatus): void {
    const waiter = this.#statusWaiter;
    this.#statusWaiter = undefined;
    if (waiter !== undefined) waiter(s);
    else this.#statusQueue.push(s);
  }

  status(): AsyncIterable<FakeStatus> {
    return {
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<FakeStatus>> => {
          const queued = this.#statusQueue.shift();
          const s =
            queued ??
            (this.#closed
              ? undefined
              : await new Promise<FakeStatus | undefined>((r) => (this.#statusWaiter = r)));
          return s === undefined ? { done: true, value: undefined } : { done: false, value: s };
        },
      }),
    };
  }

  isClosed(): boolean {
    return this.#closed;
  }

  closed(): Promise<Error | undefined> {
    return this.#closedPromise;
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#statusWaiter?.(undefined);
      this.#statusWaiter = undefined;
      this.#resolveClosed(undefined);
    }
    return Promise.resolve();
  }
}

/** Connections made through the mocked `connect`, newest last. */
export const connections: FakeNats[] = [];

/** What `vi.mock("nats")` puts in place of `connect`. */
export function fakeConnect(): Promise<NatsConnection> {
  const fake = new FakeNats();
  connections.push(fake);
  return Promise.resolve(fake.nc);
}
