import { EventEmitter } from "node:events";

/**
 * A small in-memory stand-in for amqplib's promise API: just what the transport uses, with hooks
 * to play the broker (deliver, return, close a channel, drop the connection). No network.
 */

export interface Published {
  readonly exchange: string;
  readonly routingKey: string;
  readonly content: Buffer;
  readonly options: Record<string, unknown>;
}

export interface FakeMessage {
  content: Buffer;
  fields: {
    deliveryTag: number;
    redelivered: boolean;
    exchange: string;
    routingKey: string;
    consumerTag: string;
  };
  properties: Record<string, unknown>;
}

class IllegalOperationError extends Error {
  override name = "IllegalOperationError";
}

/** What the fake broker does; tests change it between steps. */
export const broker = {
  /** Routing keys that have a queue bound (on any exchange). Mandatory publishes to others return. */
  bound: new Set<string>(),
  /** Exchanges (name → type) and queues that exist, for passive checks. */
  exchanges: new Map<string, string>(),
  queues: new Set<string>(),
  /** Called for every connect(); may throw (a refusal) or return a pending promise. */
  connect: (_url: unknown, _socketOptions: unknown): Promise<FakeConnection> =>
    Promise.resolve(new FakeConnection()),
  connections: [] as FakeConnection[],
  connectCalls: [] as { url: Record<string, unknown>; socketOptions: Record<string, unknown> }[],
  reset(): void {
    this.bound.clear();
    this.exchanges.clear();
    this.queues.clear();
    this.connections.length = 0;
    this.connectCalls.length = 0;
    this.connect = () => Promise.resolve(new FakeConnection());
  },
};

export class FakeChannel extends EventEmitter {
  readonly confirm: boolean;
  readonly conn: FakeConnection;
  closed = false;
  readonly published: Published[] = [];
  readonly settled: { how: "ack" | "nack" | "reject"; tag: number; requeue?: boolean }[] = [];
  readonly declared: { queue: string; options: Record<string, unknown> }[] = [];
  readonly bindings: [string, string, string][] = [];
  readonly qos: [number, boolean | undefined][] = [];
  readonly consumers = new Map<
    string,
    { queue: string; cb: (m: FakeMessage | null) => void; options: Record<string, unknown> }
  >();
  /** When set, the next publish throws it after registering its confirm callback. */
  failNextPublish: Error | undefined;
  /** Confirm callbacks by delivery tag, oldest first, as amqplib keeps them. */
  readonly #unconfirmed: ((err: unknown) => void)[] = [];
  #tags = 0;
  #deliveries = 0;
  /** Delivery tags delivered and not settled, in order. */
  readonly #unsettled = new Set<number>();

  constructor(conn: FakeConnection, confirm: boolean) {
    super();
    this.conn = conn;
    this.confirm = confirm;
  }

  #live(): void {
    if (this.closed) throw new IllegalOperationError("Channel closed");
  }

  publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Record<string, unknown>,
    cb?: (err: unknown) => void,
  ): boolean {
    this.#live();
    // Like amqplib's ConfirmChannel: the callback takes the next delivery tag's slot before the
    // message is encoded, so a publish that throws leaves later confirms paired one slot off.
    if (this.confirm) this.#unconfirmed.push(cb ?? (() => undefined));
    const failure = this.failNextPublish;
    this.failNextPublish = undefined;
    if (failure !== undefined) throw failure;
    for (const field of ["correlationId", "replyTo", "expiration"]) {
      const v = options[field];
      if (v !== undefined && !(typeof v === "string" && Buffer.byteLength(v) < 256)) {
        throw new TypeError(
          `Field '${field}' is the wrong type; must be a string (up to 255 chars)`,
        );
      }
    }
    const entry = { exchange, routingKey, content: Buffer.from(content), options: { ...options } };
    this.published.push(entry);
    this.conn.sent.push({ ...entry, confirm: this.confirm });
    this.conn.writes.push(`publish ${routingKey}`);
    const returned = options.mandatory === true && !broker.bound.has(routingKey);
    queueMicrotask(() => {
      if (this.closed) return;
      if (returned) {
        this.emit("return", {
          content,
          fields: { exchange, routingKey, replyCode: 312, replyText: "NO_ROUTE" },
          properties: { ...options, mandatory: undefined }, // as published
        });
      }
      if (this.confirm) this.#unconfirmed.shift()?.(null); // basic.ack of the next delivery tag
    });
    return true;
  }

  async assertQueue(queue: string, options: Record<string, unknown>): Promise<{ queue: string }> {
    this.#live();
    this.declared.push({ queue, options: { ...options } });
    broker.queues.add(queue);
    return { queue };
  }
  async checkExchange(name: string): Promise<void> {
    this.#live();
    if (!broker.exchanges.has(name)) this.#notFound(`no exchange '${name}'`);
  }
  async checkQueue(name: string): Promise<{ queue: string }> {
    this.#live();
    if (!broker.queues.has(name)) this.#notFound(`no queue '${name}'`);
    return { queue: name };
  }
  async assertExchange(
    name: string,
    type: string,
    options: Record<string, unknown>,
  ): Promise<void> {
    this.#live();
    broker.exchanges.set(name, type);
    this.declared.push({ queue: `exchange:${name}:${type}`, options: { ...options } });
  }
  #notFound(text: string): never {
    const err = Object.assign(
      new Error(`Operation failed: Check; 404 (NOT-FOUND) with message "NOT_FOUND - ${text}"`),
      { code: 404 },
    );
    this.serverClose(404, `NOT_FOUND - ${text}`);
    throw err;
  }
  async bindQueue(queue: string, exchange: string, key: string): Promise<void> {
    this.#live();
    this.bindings.push([queue, exchange, key]);
    broker.bound.add(key);
  }
  async prefetch(count: number, global?: boolean): Promise<void> {
    this.#live();
    this.qos.push([count, global]);
  }
  async consume(
    queue: string,
    cb: (m: FakeMessage | null) => void,
    options: Record<string, unknown>,
  ): Promise<{ consumerTag: string }> {
    this.#live();
    const consumerTag = `ctag-${++this.#tags}`;
    this.consumers.set(consumerTag, { queue, cb, options: { ...options } });
    return { consumerTag };
  }
  async cancel(tag: string): Promise<void> {
    this.#live();
    this.consumers.delete(tag);
  }
  /** As the broker: `allUpTo` acks every unsettled delivery up to the tag (recorded one by one). */
  ack(m: FakeMessage, allUpTo?: boolean): void {
    this.#live();
    const tag = m.fields.deliveryTag;
    this.conn.writes.push(`ack ${tag}${allUpTo === true ? " multiple" : ""}`);
    for (const t of allUpTo === true ? [...this.#unsettled].filter((u) => u <= tag) : [tag]) {
      this.#unsettled.delete(t);
      this.settled.push({ how: "ack", tag: t });
    }
  }
  nack(m: FakeMessage, _all?: boolean, requeue?: boolean): void {
    this.#live();
    this.#unsettled.delete(m.fields.deliveryTag);
    this.settled.push({ how: "nack", tag: m.fields.deliveryTag, requeue: requeue ?? true });
  }
  reject(m: FakeMessage, requeue?: boolean): void {
    this.#live();
    this.#unsettled.delete(m.fields.deliveryTag);
    this.settled.push({ how: "reject", tag: m.fields.deliveryTag, requeue: requeue ?? true });
  }
  async close(): Promise<void> {
    this.#live();
    this.#toClosed();
  }

  /** Broker side: deliver a message to the only (or the given) consumer. */
  deliver(
    body: string,
    properties: Record<string, unknown> = {},
    redelivered = false,
  ): FakeMessage {
    const [tag, consumer] = [...this.consumers.entries()][0] ?? [];
    if (tag === undefined || consumer === undefined) throw new Error("no consumer on this channel");
    const m: FakeMessage = {
      content: Buffer.from(body),
      fields: {
        deliveryTag: ++this.#deliveries,
        redelivered,
        exchange: "",
        routingKey: consumer.queue,
        consumerTag: tag,
      },
      properties,
    };
    this.#unsettled.add(m.fields.deliveryTag);
    consumer.cb(m);
    return m;
  }

  /** Broker side: close this channel with an error (as RabbitMQ's channel.close does). */
  serverClose(code: number, text: string): void {
    const err = Object.assign(
      new Error(`Channel closed by server: ${code} (${text}) with message "${text}"`),
      { code },
    );
    this.emit("error", err);
    this.#toClosed();
  }

  /** Broker side: cancel every consumer (queue deleted). */
  serverCancel(): void {
    for (const c of this.consumers.values()) c.cb(null);
    this.consumers.clear();
  }

  toClosedByConnection(): void {
    if (!this.closed) this.#toClosed();
  }

  #toClosed(): void {
    this.closed = true;
    this.emit("close");
    for (const cb of this.#unconfirmed.splice(0)) cb(new Error("channel closed"));
  }
}

export class FakeConnection extends EventEmitter {
  readonly channels: FakeChannel[] = [];
  /** Every publish on every channel, in order, and whether its channel confirms. */
  readonly sent: (FakeChannel["published"][number] & { confirm: boolean })[] = [];
  /** Publishes ("publish <routing key>") and acks ("ack <tag>[ multiple]"), in write order. */
  readonly writes: string[] = [];
  closed = false;

  constructor() {
    super();
    broker.connections.push(this);
  }

  async createChannel(): Promise<FakeChannel> {
    if (this.closed) throw new IllegalOperationError("Connection closed");
    const ch = new FakeChannel(this, false);
    this.channels.push(ch);
    return ch;
  }
  async createConfirmChannel(): Promise<FakeChannel> {
    if (this.closed) throw new IllegalOperationError("Connection closed");
    const ch = new FakeChannel(this, true);
    this.channels.push(ch);
    return ch;
  }
  async close(): Promise<void> {
    if (this.closed) throw new IllegalOperationError("Connection closed");
    this.#toClosed(undefined);
  }

  /** Broker side: the connection dies (socket error or connection.close from the server). */
  drop(code?: number, text = "CONNECTION_FORCED"): void {
    const err = Object.assign(
      new Error(`Connection closed: ${code ?? "socket"} (${text})`),
      code === undefined ? {} : { code },
    );
    this.emit("error", err);
    this.#toClosed(err);
  }

  #toClosed(err: Error | undefined): void {
    this.closed = true;
    for (const ch of this.channels) ch.toClosedByConnection();
    this.emit("close", err);
  }

  /** The channel that has a consumer on `queue`. */
  consumerChannel(queue: string): FakeChannel {
    const ch = this.channels.find(
      (c) => !c.closed && [...c.consumers.values()].some((x) => x.queue === queue),
    );
    if (ch === undefined) throw new Error(`no live consumer on ${queue}`);
    return ch;
  }

  /** The (live) publisher channel. */
  publisher(): FakeChannel {
    const ch = this.channels.find((c) => c.confirm && !c.closed);
    if (ch === undefined) throw new Error("no live publisher channel");
    return ch;
  }
}

/** The module object `vi.mock("amqplib")` returns. */
export const fakeAmqplib = {
  default: {
    connect: (
      url: Record<string, unknown>,
      socketOptions: Record<string, unknown>,
    ): Promise<FakeConnection> => {
      broker.connectCalls.push({ url, socketOptions });
      return broker.connect(url, socketOptions);
    },
  },
};
