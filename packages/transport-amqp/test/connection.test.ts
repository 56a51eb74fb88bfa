import { createRequire } from "node:module";
import { Duplex, PassThrough } from "node:stream";
import { NuropbTransportError } from "@nuropb/protocol";
import { describe, expect, it } from "vitest";
import {
  channelError,
  coalesceWrites,
  connectError,
  isAccessRefusal,
  isPermanent,
} from "../src/connection.ts";
import { resolveTarget } from "../src/options.ts";

const { Connection: AmqplibConnection } = createRequire(import.meta.url)(
  "amqplib/lib/connection.js",
) as { Connection: new (stream: Duplex) => unknown };

const target = resolveTarget("amqp://alice:Sup3rS3cret@rabbit:5672/mesh-a");
const socketError = (message: string, code: string): Error =>
  Object.assign(new Error(message), { code });

describe("connectError classifies by code", () => {
  it.each([
    [
      "a refused login",
      new Error(
        'Handshake terminated by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"',
      ),
      { permanent: true, refusal: true, message: /refused the login of user 'alice'/ },
    ],
    [
      "a refused vhost",
      new Error("Expected ConnectionOpenOk; got <ConnectionClose channel:0>"),
      { permanent: true, refusal: true, message: /refused to open vhost 'mesh-a'/ },
    ],
    [
      "a vhost down on that node (it may come back, or another node serves it)",
      new Error(
        "Expected ConnectionOpenOk; got <ConnectionClose channel:0 replyCode:530 replyText:NOT_ALLOWED - vhost mesh-a is down on node rabbit@a>",
      ),
      { permanent: false, refusal: false, message: /vhost 'mesh-a' is down at amqp:/ },
    ],
    [
      "a certificate that cannot be verified",
      socketError("self-signed certificate in certificate chain", "SELF_SIGNED_CERT_IN_CHAIN"),
      { permanent: true, refusal: false, message: /^TLS connection to .*certificate/ },
    ],
    [
      "a TLS handshake reset",
      socketError(
        "Client network socket disconnected before secure TLS connection was established",
        "ECONNRESET",
      ),
      { permanent: false, refusal: false, message: /^cannot connect to .*ECONNRESET/ },
    ],
    [
      "a TLS handshake timeout",
      socketError("TLS handshake timeout", "ERR_TLS_HANDSHAKE_TIMEOUT"),
      { permanent: false, refusal: false, message: /^cannot connect to / },
    ],
    [
      "an unknown host (DNS while a broker container restarts)",
      socketError("getaddrinfo ENOTFOUND rabbit", "ENOTFOUND"),
      { permanent: false, refusal: false, message: /^host 'rabbit' not found/ },
    ],
    [
      "a handshake closed with another code",
      new Error('Handshake terminated by server: 541 (INTERNAL-ERROR) with message "boom"'),
      { permanent: false, refusal: false, message: /^cannot connect to .*541/ },
    ],
    [
      "text that merely mentions 403 or TLS",
      new Error("socket to 10.0.0.1:403 closed during TLS setup"),
      { permanent: false, refusal: false, message: /^cannot connect to / },
    ],
  ] as const)("%s", (_what, err, expected) => {
    const e = connectError(err, target);
    expect(e).toBeInstanceOf(NuropbTransportError);
    expect(isPermanent(e)).toBe(expected.permanent);
    expect(e.retryable).toBe(!expected.permanent);
    expect(isAccessRefusal(e)).toBe(expected.refusal);
    expect(e.message).toMatch(expected.message);
    expect(e.message).not.toContain("Sup3rS3cret");
  });

  it("a channel refusal (403 exclusive use) is permanent for that operation but no access refusal", () => {
    const e = channelError(
      Object.assign(
        new Error(
          `Operation failed: BasicConsume; 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - queue 'q' in vhost 'mesh-a' in exclusive use"`,
        ),
        { code: 403 },
      ),
      "cannot consume response queue q",
      undefined,
    );
    expect(isPermanent(e)).toBe(true);
    expect(isAccessRefusal(e)).toBe(false);
    expect(isAccessRefusal(new Error("ACCESS_REFUSED"))).toBe(false);
  });
});

describe("coalesceWrites", () => {
  /** A socket stand-in that records how its writes reach it: one chunk or a corked batch. */
  function recordingSocket(): { socket: Duplex; calls: number[] } {
    const calls: number[] = [];
    const socket = new Duplex({
      read() {},
      write(_chunk, _encoding, done) {
        calls.push(1);
        done();
      },
      writev(chunks, done) {
        calls.push(chunks.length);
        done();
      },
    });
    return { socket, calls };
  }

  /** Frames from two channels in one tick, through amqplib's own muxer; how they were written. */
  async function muxTwoChannels(coalesce: boolean): Promise<number[]> {
    const { socket, calls } = recordingSocket();
    const connection = new AmqplibConnection(socket) as {
      muxer: { pipeFrom(s: PassThrough): void };
    };
    if (coalesce) expect(coalesceWrites({ connection } as never)).toBe(true);
    const a = new PassThrough({ objectMode: true });
    const b = new PassThrough({ objectMode: true });
    connection.muxer.pipeFrom(a);
    connection.muxer.pipeFrom(b);
    for (let i = 0; i < 3; i++) {
      a.write(Buffer.from(`a${i}`));
      b.write(Buffer.from(`b${i}`));
    }
    await new Promise((r) => setTimeout(r, 20));
    return calls;
  }

  it("turns a muxer round into one socket write (amqplib's real muxer)", async () => {
    expect(await muxTwoChannels(false)).toEqual([1, 1, 1, 1, 1, 1]);
    expect(await muxTwoChannels(true)).toEqual([6]);
  });

  it("uncorks even when the muxer throws, and leaves other shapes alone", () => {
    let corked = 0;
    const socket = { cork: () => corked++, uncork: () => corked-- };
    const muxer = {
      out: socket,
      _readIncoming(): void {
        throw new Error("boom");
      },
    };
    expect(coalesceWrites({ connection: { muxer } } as never)).toBe(true);
    expect(() => muxer._readIncoming()).toThrow("boom");
    expect(corked).toBe(0);
    expect(coalesceWrites({} as never)).toBe(false);
    expect(
      coalesceWrites({ connection: { muxer: { out: {}, _readIncoming() {} } } } as never),
    ).toBe(false);
  });
});
