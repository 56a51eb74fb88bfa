import { describe, expect, it } from "vitest";
import {
  NuropbConnectionClosedError,
  NuropbTransportError,
  createTransportLifecycle,
} from "@nuropb/protocol";
import type { Logger, TransportEvent } from "@nuropb/protocol";
import { deferred } from "./support/deferred.ts";

async function collect(iterable: AsyncIterable<TransportEvent>): Promise<TransportEvent[]> {
  const out: TransportEvent[] = [];
  for await (const e of iterable) out.push(e);
  return out;
}

describe("createTransportLifecycle", () => {
  it("refuses an empty name", () => {
    expect(() => createTransportLifecycle("")).toThrow(/name must be a non-empty string/);
  });

  it("connect: idle → connecting → open, one attempt shared by concurrent callers", async () => {
    const life = createTransportLifecycle("Test");
    expect(life.state).toBe("idle");
    const gate = deferred();
    let attempts = 0;
    const attempt = (): Promise<void> => {
      attempts++;
      return gate.promise;
    };
    const a = life.connect(attempt);
    const b = life.connect(attempt);
    expect(life.state).toBe("connecting");
    gate.resolve();
    await Promise.all([a, b]);
    expect(attempts).toBe(1);
    expect(life.state).toBe("open");
    await life.connect(attempt);
    expect(attempts).toBe(1);
  });

  it("a failed attempt goes back to idle and may be tried again", async () => {
    const life = createTransportLifecycle("Test");
    await expect(life.connect(() => Promise.reject(new Error("refused")))).rejects.toThrow(
      "refused",
    );
    expect(life.state).toBe("idle");
    await life.connect(() => Promise.resolve());
    expect(life.state).toBe("open");
  });

  it("opened() moves connecting to open before the attempt returns; a no-op otherwise", async () => {
    const life = createTransportLifecycle("Test");
    life.opened();
    expect(life.state).toBe("idle");
    let during: string | undefined;
    await life.connect(async () => {
      life.opened();
      during = life.state;
    });
    expect(during).toBe("open");
    expect(life.state).toBe("open");
  });

  it("reconnecting() moves open to connecting until opened(); a no-op unless open", async () => {
    const life = createTransportLifecycle("Test");
    life.reconnecting();
    expect(life.state).toBe("idle");
    await life.connect(() => Promise.resolve());
    life.reconnecting();
    expect(life.state).toBe("connecting");
    life.opened();
    expect(life.state).toBe("open");
    await life.close(() => Promise.resolve());
    life.reconnecting();
    life.opened();
    expect(life.state).toBe("closed");
  });

  it("close mid-connect: the attempt's callers get a closed error, close waits for shutdown", async () => {
    const life = createTransportLifecycle("Test");
    const gate = deferred();
    const connecting = life.connect(() => gate.promise);
    const order: string[] = [];
    const closing = life.close(async () => {
      order.push("shutdown");
      await life.connectSettled();
      order.push("connect settled");
    });
    expect(life.state).toBe("closing");
    expect(life.ending).toBe(true);
    gate.resolve();
    await expect(connecting).rejects.toThrow(NuropbConnectionClosedError);
    await expect(connecting).rejects.toThrow("the Test transport was closed while connecting");
    await closing;
    expect(order).toEqual(["shutdown", "connect settled"]);
    expect(life.state).toBe("closed");
    await expect(life.connect(() => Promise.resolve())).rejects.toThrow(
      "the Test transport is closed",
    );
  });

  it("close runs shutdown once, reports closed once and ends every events() stream", async () => {
    const life = createTransportLifecycle("Test");
    await life.connect(() => Promise.resolve());
    const seen = collect(life.events());
    life.emit({ type: "disconnected" });
    let shutdowns = 0;
    const shutdown = async (): Promise<void> => {
      shutdowns++;
      throw new Error("the broker was already gone");
    };
    const first = life.close(shutdown);
    const second = life.close(shutdown);
    expect(second).toBe(first);
    await first;
    await life.close(shutdown);
    expect(shutdowns).toBe(1);
    expect(await seen).toEqual([{ type: "disconnected" }, { type: "closed" }]);
    expect(await life.closed()).toBeUndefined();
    expect(await collect(life.events())).toEqual([]);
  });

  it("finish with a reason: closed() resolves with it and a later close() does nothing", async () => {
    const life = createTransportLifecycle("Test");
    await life.connect(() => Promise.resolve());
    const seen = collect(life.events());
    const reason = new Error("connection lost for good");
    life.finish(reason);
    life.finish(new Error("a second reason is ignored"));
    expect(life.state).toBe("closed");
    expect(await life.closed()).toBe(reason);
    expect(await seen).toEqual([{ type: "closed", error: reason }]);
    let ran = false;
    await life.close(async () => {
      ran = true;
    });
    expect(ran).toBe(false);
  });

  it("close with a reason passes it to closed() and the closed event", async () => {
    const life = createTransportLifecycle("Test");
    const reason = new Error("access revoked");
    const seen = collect(life.events());
    await life.close(() => Promise.resolve(), reason);
    expect(await life.closed()).toBe(reason);
    expect(await seen).toEqual([{ type: "closed", error: reason }]);
  });

  it("closedError names the transport and keeps a cause", () => {
    const life = createTransportLifecycle("Redis");
    const cause = new Error("socket");
    const err = life.closedError(undefined, { cause });
    expect(err).toBeInstanceOf(NuropbConnectionClosedError);
    expect(err.message).toBe("the Redis transport is closed");
    expect(err.cause).toBe(cause);
    expect(life.closedError("custom").message).toBe("custom");
  });
});

describe("createTransportLifecycle: link down and recovery", () => {
  function recorder(): { lines: string[]; logger: Logger } {
    const lines: string[] = [];
    const logger: Logger = {
      debug: () => undefined,
      info: (msg) => lines.push(`info ${msg}`),
      warn: (msg) => lines.push(`warn ${msg}`),
      error: (msg) => lines.push(`error ${msg}`),
      child: () => logger,
    };
    return { lines, logger };
  }

  it("an outage is reported once; recovery redeclares, then reports reconnected once", async () => {
    const { lines, logger } = recorder();
    const life = createTransportLifecycle("Test", logger);
    life.linkDown(); // not open yet: nothing to report
    await life.connect(() => Promise.resolve());
    const seen = collect(life.events());
    life.linkDown({ server: "a" });
    life.linkDown({ server: "a" });
    let redeclared = 0;
    const redeclare = async (): Promise<void> => {
      redeclared++;
    };
    await Promise.all([life.recover(redeclare, () => true), life.recover(redeclare, () => true)]);
    expect(redeclared).toBe(1);
    await life.recover(redeclare, () => true); // nothing was down: no second `reconnected`
    await life.close(() => Promise.resolve());
    expect(await seen).toEqual([
      { type: "disconnected" },
      { type: "reconnected" },
      { type: "closed" },
    ]);
    expect(lines).toEqual(["warn disconnected", "info reconnected"]);
  });

  it("a failing redeclare is retried, its first failure reported as errored", async () => {
    const { lines, logger } = recorder();
    const life = createTransportLifecycle("Test", logger);
    await life.connect(() => Promise.resolve());
    const seen = collect(life.events());
    life.linkDown();
    let tries = 0;
    await life.recover(
      async () => {
        if (++tries < 3) throw new Error(`try ${tries}`);
      },
      () => true,
    );
    expect(tries).toBe(3);
    await life.close(() => Promise.resolve());
    const events = await seen;
    expect(events.map((e) => e.type)).toEqual(["disconnected", "errored", "reconnected", "closed"]);
    const errored = events[1];
    expect(errored?.type === "errored" && errored.error).toBeInstanceOf(NuropbTransportError);
    expect(lines.filter((l) => l.startsWith("warn re-declaring"))).toHaveLength(2);
  });

  it("no reconnected while the link is still down, nor once closing", async () => {
    const life = createTransportLifecycle("Test");
    await life.connect(() => Promise.resolve());
    const seen = collect(life.events());
    life.linkDown();
    await life.recover(
      () => Promise.resolve(),
      () => false,
    );
    const closing = life.close(() => Promise.resolve());
    await life.recover(
      () => Promise.resolve(),
      () => true,
    );
    await closing;
    expect((await seen).map((e) => e.type)).toEqual(["disconnected", "closed"]);
  });
});
