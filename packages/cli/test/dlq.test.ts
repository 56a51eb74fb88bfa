import { afterEach, describe, expect, it } from "vitest";
import type { DeadLetterEntry, DeadLetterStore, Delivery, Transport } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { dlqDetailOf, requeueDeadLetters } from "../src/commands/dlq.ts";
import { REDACTED, redactSecrets } from "../src/scrub.ts";

function letter(body: unknown, headers: Record<string, string> = {}): DeadLetterEntry {
  return {
    id: "c1",
    service: "orders",
    reason: "rejected",
    frame: {
      headers: { nuropb_type: "command", ...headers },
      body: new TextEncoder().encode(JSON.stringify(body)),
      correlationId: "c1",
    },
  };
}

describe("nuropb dlq show: credentials", () => {
  it("redacts the credentials of a dead letter's context and keeps the rest", () => {
    const d = letter({
      tag: "request",
      params: { order: 1 },
      context: {
        Authorization: "Bearer s3cret-jwt",
        user_token: "tok-123",
        db: { password: "hunter22", host: "db1" },
        apiKey: "k-9",
        tenant: "acme",
      },
    });
    const shown = JSON.stringify(dlqDetailOf(d));
    for (const secret of ["s3cret-jwt", "tok-123", "hunter22", "k-9"]) {
      expect(shown).not.toContain(secret);
    }
    expect(dlqDetailOf(d).body).toEqual({
      tag: "request",
      params: { order: 1 },
      context: {
        Authorization: REDACTED,
        user_token: REDACTED,
        db: { password: REDACTED, host: "db1" },
        apiKey: REDACTED,
        tenant: "acme",
      },
    });
  });

  it("redacts credential-like headers and leaves bodies without a context alone", () => {
    const d = letter({ params: [1, 2] }, { x_auth_token: "t-1", nuropb_failure_error: "E" });
    const detail = dlqDetailOf(d);
    expect(detail.headers).toMatchObject({ x_auth_token: REDACTED, nuropb_failure_error: "E" });
    expect(detail.body).toEqual({ params: [1, 2] });
  });

  it("redactSecrets walks arrays and leaves scalars", () => {
    expect(redactSecrets([{ secret: 1 }, "x", null])).toEqual([{ secret: REDACTED }, "x", null]);
    expect(redactSecrets("Authorization")).toBe("Authorization");
  });
});

/** A store over an array; with `oneByOne`, also `take` (as the RabbitMQ store has). */
function arrayStore(letters: DeadLetterEntry[], oneByOne: boolean): DeadLetterStore {
  const store: DeadLetterStore = {
    list: (limit) => Promise.resolve(letters.slice(0, limit)),
    remove(ids) {
      const before = letters.length;
      letters.splice(0, letters.length, ...letters.filter((d) => !ids.includes(d.id)));
      return Promise.resolve(before - letters.length);
    },
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
  if (!oneByOne) return store;
  return {
    ...store,
    async take(limit, visit) {
      let removed = 0;
      for (const d of letters.slice(0, limit)) {
        if (await visit(d)) removed += await store.remove([d.id]);
      }
      return removed;
    },
  };
}

function deadLetter(id: string, service: string | undefined): DeadLetterEntry {
  return {
    id,
    service,
    reason: "rejected",
    frame: {
      headers: {
        nuropb_type: "command",
        nuropb_failure_error: "NuropbException",
        nuropb_failure_service: service ?? "",
      },
      body: new TextEncoder().encode(`{"id":"${id}"}`),
      correlationId: id,
    },
  };
}

describe("nuropb dlq requeue", () => {
  const open: Transport[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((t) => t.close()));
  });

  async function mesh(): Promise<{ transport: Transport; got: Delivery[] }> {
    const hub = createMemoryHub();
    const service = createMemoryTransport({ hub });
    const transport = createMemoryTransport({ hub });
    open.push(service, transport);
    await service.connect();
    await transport.connect();
    const got: Delivery[] = [];
    await service.consumeService(
      { service: "orders", rpcBindings: [], eventBindings: [], prefetch: 1 },
      async (d) => {
        got.push(d);
        await d.ack();
      },
    );
    return { transport, got };
  }

  it.each([
    ["list and remove", false],
    ["one pass (take)", true],
  ])(
    "keeps the letters no queue took and removes only the requeued (%s)",
    async (_how, oneByOne) => {
      const { transport, got } = await mesh();
      const letters = [
        deadLetter("a", "orders"),
        deadLetter("b", "retired"),
        deadLetter("c", undefined),
      ];
      const notes: string[] = [];
      const store = arrayStore(letters, oneByOne);
      const r = await requeueDeadLetters(store, transport, { all: true, limit: 100 }, (l) =>
        notes.push(l),
      );
      expect(r).toEqual({ requeued: 1, kept: 2 });
      expect(letters.map((d) => d.id)).toEqual(["b", "c"]);
      expect(got).toHaveLength(1);
      expect(got[0]!.correlationId).toBe("a");
      expect(got[0]!.headers).not.toHaveProperty("nuropb_failure_error");
      expect(notes.join("\n")).toMatch(/b: service retired has no queue/);
    },
  );

  it("refuses to requeue a letter whose body the store left out", async () => {
    const { transport, got } = await mesh();
    const letters = [{ ...deadLetter("h", "orders"), incomplete: "the body was left out" }];
    const notes: string[] = [];
    const r = await requeueDeadLetters(arrayStore(letters, false), transport, { id: "h" }, (l) =>
      notes.push(l),
    );
    expect(r).toEqual({ requeued: 0, kept: 1 });
    expect(letters).toHaveLength(1);
    expect(got).toEqual([]);
    expect(notes.join("\n")).toMatch(/h: not requeued, the body was left out/);
  });

  it("keeps one letter by id when its service has no queue", async () => {
    const { transport } = await mesh();
    const letters = [deadLetter("b", "retired")];
    const r = await requeueDeadLetters(arrayStore(letters, false), transport, { id: "b" }, () => {
      /* notes unused */
    });
    expect(r).toEqual({ requeued: 0, kept: 1 });
    expect(letters).toHaveLength(1);
  });
});
