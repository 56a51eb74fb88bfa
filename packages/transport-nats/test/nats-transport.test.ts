import { afterEach, describe, expect, it, vi } from "vitest";
import type { Frame, Transport } from "@nuropb/protocol";
import { createNatsTransport, type NatsTransportOptions } from "@nuropb/transport-nats";
import { connections, type FakeNats, type Published } from "./fake-nats.ts";

// The fake is loaded when connect() is called: it imports "nats" itself, so loading it from this
// factory would wait on the mock being made.
vi.mock("nats", async (importOriginal) => ({
  ...(await importOriginal<typeof import("nats")>()),
  connect: async () => (await import("./fake-nats.ts")).fakeConnect(),
}));

const made: Transport[] = [];
afterEach(async () => {
  await Promise.allSettled(made.splice(0).map((t) => t.close()));
  connections.splice(0);
});

async function open(
  options: Partial<NatsTransportOptions> = {},
): Promise<{ t: Transport; fake: FakeNats }> {
  const t = createNatsTransport({ servers: "nats://fake:4222", mesh: "m", ...options });
  made.push(t);
  await t.connect();
  const fake = connections.at(-1);
  if (fake === undefined) throw new Error("no connection made");
  return { t, fake };
}

const frame: Frame = {
  headers: { nuropb_type: "request" },
  body: new Uint8Array([1, 2, 3]),
  correlationId: "c1",
};

function publishedOn(fake: FakeNats, subject: string): Published[] {
  return fake.published.filter((p) => p.subject === subject);
}

describe("send over a link that drops", () => {
  it.each([
    ["rpc", { kind: "rpc", service: "svc" }, "m.rpc.svc"],
    ["event", { kind: "event", topic: "a.b" }, "m.evt.a.b"],
  ] as const)(
    "a %s publish sent again after a disconnect keeps its Nats-Msg-Id, so the stream stores it once",
    async (_kind, to, subject) => {
      const { t, fake } = await open();
      const sending = t.send(to, frame);
      await vi.waitFor(() => expect(publishedOn(fake, subject)).toHaveLength(1));
      // The stream stored it, but the acknowledgement is lost with the link.
      fake.disconnect();
      fake.reconnect();
      await vi.waitFor(() => expect(publishedOn(fake, subject)).toHaveLength(2));
      const [first, again] = publishedOn(fake, subject);
      const id = first?.headers?.get("Nats-Msg-Id") ?? "";
      expect(id).not.toBe("");
      expect(again?.headers?.get("Nats-Msg-Id")).toBe(id);
      if (again !== undefined) fake.ack(again, { stream: "S", seq: 1, duplicate: true });
      await sending;
      // Another send is another message.
      const other = t.send(to, frame);
      await vi.waitFor(() => expect(publishedOn(fake, subject)).toHaveLength(3));
      const third = publishedOn(fake, subject)[2];
      expect(third?.headers?.get("Nats-Msg-Id")).not.toBe(id);
      if (third !== undefined) fake.ack(third);
      await other;
    },
  );
});
