import { createServer, Socket } from "node:net";
import type { AddressInfo, Server } from "node:net";

/** One header-table entry exactly as it travelled: name, AMQP type tag, decoded value. */
export interface RawField {
  readonly name: string;
  /** The AMQP 0-9-1 / RabbitMQ field type tag: `S` long string, `V` void, `x` bytes, … */
  readonly tag: string;
  readonly value: unknown;
}

/** A basic.publish seen on the wire, with its content header decoded byte by byte. */
export interface SniffedPublish {
  readonly channel: number;
  readonly exchange: string;
  readonly routingKey: string;
  readonly mandatory: boolean;
  /** Names of the properties present, in wire order (`content-type`, `headers`, …). */
  readonly present: readonly string[];
  /** Decoded properties (headers as an object). */
  readonly properties: Readonly<Record<string, unknown>>;
  /** The headers table entry by entry, with type tags, in wire order. */
  readonly headers: readonly RawField[] | undefined;
  readonly body: Buffer;
}

/** A TCP proxy in front of RabbitMQ that decodes what clients publish. */
export interface AmqpSniffer {
  readonly port: number;
  /** Every publish seen so far, in order. */
  readonly publishes: readonly SniffedPublish[];
  /** Closes every proxied connection (like a network failure). */
  dropConnections(): void;
  close(): Promise<void>;
}

const PROPERTY_ORDER = [
  "content-type",
  "content-encoding",
  "headers",
  "delivery-mode",
  "priority",
  "correlation-id",
  "reply-to",
  "expiration",
  "message-id",
  "timestamp",
  "type",
  "user-id",
  "app-id",
  "cluster-id",
] as const;

/**
 * Starts a proxy on a free port forwarding to `127.0.0.1:targetPort`. With `sniff: false` it only
 * forwards (and can still drop connections).
 */
export async function startAmqpSniffer(
  targetPort: number,
  options: { readonly sniff?: boolean } = {},
): Promise<AmqpSniffer> {
  const sniff = options.sniff ?? true;
  const publishes: SniffedPublish[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = new Socket();
    sockets.add(client);
    sockets.add(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const parser = new ClientStreamParser((p) => publishes.push(p));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
    upstream.connect(targetPort, "127.0.0.1");
    client.on("data", (chunk: Buffer) => {
      if (sniff) parser.push(chunk);
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => client.write(chunk));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    publishes,
    dropConnections: () => {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

interface Pending {
  exchange: string;
  routingKey: string;
  mandatory: boolean;
  header?: {
    present: string[];
    properties: Record<string, unknown>;
    headers: RawField[] | undefined;
    bodySize: number;
  };
  body: Buffer[];
  received: number;
}

/** Parses the client → broker byte stream of one connection into publishes. */
class ClientStreamParser {
  #buf = Buffer.alloc(0);
  #sawProtocolHeader = false;
  readonly #pending = new Map<number, Pending>();
  readonly #emit: (p: SniffedPublish) => void;

  constructor(emit: (p: SniffedPublish) => void) {
    this.#emit = emit;
  }

  push(chunk: Buffer): void {
    this.#buf = Buffer.concat([this.#buf, chunk]);
    if (!this.#sawProtocolHeader) {
      if (this.#buf.length < 8) return;
      this.#buf = this.#buf.subarray(8); // "AMQP\0\0\9\1"
      this.#sawProtocolHeader = true;
    }
    while (this.#buf.length >= 7) {
      const type = this.#buf.readUInt8(0);
      const channel = this.#buf.readUInt16BE(1);
      const size = this.#buf.readUInt32BE(3);
      if (this.#buf.length < 7 + size + 1) return;
      const payload = this.#buf.subarray(7, 7 + size);
      this.#buf = this.#buf.subarray(8 + size);
      this.#frame(type, channel, payload);
    }
  }

  #frame(type: number, channel: number, payload: Buffer): void {
    if (type === 1) {
      const classId = payload.readUInt16BE(0);
      const methodId = payload.readUInt16BE(2);
      if (classId === 60 && methodId === 40) {
        const r = new Reader(payload, 4);
        r.u16(); // reserved
        const exchange = r.shortstr();
        const routingKey = r.shortstr();
        const bits = r.u8();
        this.#pending.set(channel, {
          exchange,
          routingKey,
          mandatory: (bits & 1) === 1,
          body: [],
          received: 0,
        });
      }
    } else if (type === 2) {
      const p = this.#pending.get(channel);
      if (p === undefined) return;
      const r = new Reader(payload, 0);
      r.u16(); // class
      r.u16(); // weight
      const bodySize = Number(r.u64());
      const flags = r.u16();
      const present: string[] = [];
      const properties: Record<string, unknown> = {};
      let headers: RawField[] | undefined;
      PROPERTY_ORDER.forEach((name, i) => {
        if ((flags & (1 << (15 - i))) === 0) return;
        present.push(name);
        switch (name) {
          case "headers":
            headers = r.table();
            properties[name] = Object.fromEntries(headers.map((f) => [f.name, f.value]));
            break;
          case "delivery-mode":
          case "priority":
            properties[name] = r.u8();
            break;
          case "timestamp":
            properties[name] = r.u64();
            break;
          default:
            properties[name] = r.shortstr();
        }
      });
      p.header = { present, properties, headers, bodySize };
      if (bodySize === 0) this.#finish(channel, p);
    } else if (type === 3) {
      const p = this.#pending.get(channel);
      if (p?.header === undefined) return;
      p.body.push(Buffer.from(payload));
      p.received += payload.length;
      if (p.received >= p.header.bodySize) this.#finish(channel, p);
    }
  }

  #finish(channel: number, p: Pending): void {
    this.#pending.delete(channel);
    const h = p.header;
    if (h === undefined) return;
    this.#emit({
      channel,
      exchange: p.exchange,
      routingKey: p.routingKey,
      mandatory: p.mandatory,
      present: h.present,
      properties: h.properties,
      headers: h.headers,
      body: Buffer.concat(p.body),
    });
  }
}

class Reader {
  readonly #b: Buffer;
  #o: number;
  constructor(b: Buffer, offset: number) {
    this.#b = b;
    this.#o = offset;
  }
  u8(): number {
    return this.#b.readUInt8(this.#o++);
  }
  u16(): number {
    const v = this.#b.readUInt16BE(this.#o);
    this.#o += 2;
    return v;
  }
  u32(): number {
    const v = this.#b.readUInt32BE(this.#o);
    this.#o += 4;
    return v;
  }
  u64(): bigint {
    const v = this.#b.readBigUInt64BE(this.#o);
    this.#o += 8;
    return v;
  }
  shortstr(): string {
    const n = this.u8();
    const s = this.#b.toString("utf8", this.#o, this.#o + n);
    this.#o += n;
    return s;
  }
  longBytes(): Buffer {
    const n = this.u32();
    const v = this.#b.subarray(this.#o, this.#o + n);
    this.#o += n;
    return v;
  }
  table(): RawField[] {
    const end = this.u32() + this.#o;
    const out: RawField[] = [];
    while (this.#o < end) {
      const name = this.shortstr();
      const [tag, value] = this.value();
      out.push({ name, tag, value });
    }
    return out;
  }
  value(): [string, unknown] {
    const tag = String.fromCharCode(this.u8());
    const b = this.#b;
    let v: unknown;
    switch (tag) {
      case "S":
        v = this.longBytes().toString("utf8");
        break;
      case "x":
        v = Buffer.from(this.longBytes());
        break;
      case "V":
        v = null;
        break;
      case "t":
        v = this.u8() !== 0;
        break;
      case "b":
        v = b.readInt8(this.#o++);
        break;
      case "B":
        v = this.u8();
        break;
      case "s":
        v = b.readInt16BE(this.#o);
        this.#o += 2;
        break;
      case "u":
        v = this.u16();
        break;
      case "I":
        v = b.readInt32BE(this.#o);
        this.#o += 4;
        break;
      case "i":
        v = this.u32();
        break;
      case "l":
        v = b.readBigInt64BE(this.#o);
        this.#o += 8;
        break;
      case "T":
        v = this.u64();
        break;
      case "d":
        v = b.readDoubleBE(this.#o);
        this.#o += 8;
        break;
      case "f":
        v = b.readFloatBE(this.#o);
        this.#o += 4;
        break;
      case "D":
        v = { scale: this.u8(), value: b.readInt32BE(this.#o) };
        this.#o += 4;
        break;
      case "F":
        v = this.table();
        break;
      case "A": {
        const end = this.u32() + this.#o;
        const items: unknown[] = [];
        while (this.#o < end) items.push(this.value());
        v = items;
        break;
      }
      default:
        throw new Error(`unknown field type tag ${JSON.stringify(tag)}`);
    }
    return [tag, v];
  }
}
