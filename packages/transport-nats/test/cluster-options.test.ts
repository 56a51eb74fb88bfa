import { describe, expect, it } from "vitest";
import type { JetStreamManager, NatsConnection, StreamConfig } from "nats";
import { describeServers } from "../src/connection.ts";
import { createNatsLeaseStore } from "../src/lease-store.ts";
import { JsErr } from "../src/nats-errors.ts";
import { resolveNatsOptions, splitServerList } from "../src/options.ts";
import { Topology } from "../src/topology.ts";

// Issue #19: the servers of a NATS cluster and the replicas of the streams the transport creates.

describe("NATS cluster options", () => {
  it("splits a comma list of servers, the first one's scheme and credentials applying to the rest", () => {
    expect(splitServerList("nats://u:pw@h1:4222,h2:4223, nats://h3:4224")).toEqual([
      "nats://u:pw@h1:4222",
      "nats://u:pw@h2:4223",
      "nats://h3:4224",
    ]);
    expect(splitServerList("nats://h1:4222")).toEqual(["nats://h1:4222"]);
    expect(resolveNatsOptions({ servers: "nats://a:1,b:2" }).servers).toEqual([
      "nats://a:1",
      "nats://b:2",
    ]);
    expect(resolveNatsOptions({ servers: ["nats://a:1,b:2", "nats://c:3"] }).servers).toEqual([
      "nats://a:1",
      "nats://b:2",
      "nats://c:3",
    ]);
    expect(() => resolveNatsOptions({ servers: "nats://a:1,,b:2" })).toThrow(/servers/);
  });

  it("takes replicas from 1 to 5, default 1", () => {
    expect(resolveNatsOptions({ servers: "nats://a:1" }).replicas).toBe(1);
    expect(resolveNatsOptions({ servers: "nats://a:1", replicas: 3 }).replicas).toBe(3);
    for (const bad of [0, 6, 2.5, "3"]) {
      expect(() => resolveNatsOptions({ servers: "nats://a:1", replicas: bad as never })).toThrow(
        /'replicas' must be an integer from 1 to 5/,
      );
    }
  });

  it("the lease store takes replicas from 1 to 5 (no I/O at construction)", () => {
    const store = (replicas: unknown) => (): unknown =>
      createNatsLeaseStore({ servers: "nats://a:1", name: "s", replicas: replicas as number });
    expect(store(3)).not.toThrow();
    expect(store(undefined)).not.toThrow();
    for (const bad of [0, 6, 1.5, "3", Number.NaN]) {
      expect(store(bad)).toThrow(/createNatsLeaseStore: 'replicas' must be an integer from 1 to 5/);
    }
  });

  it("masks credentials when it names the servers", () => {
    const text = describeServers(["nats://alice:s3cret-pw@h1:4222", "nats://t0ken-value@h2:4222"]);
    expect(text).toBe("nats://alice:****@h1:4222, nats://****@h2:4222");
  });

  it("creates streams with the configured replicas", async () => {
    const added: Partial<StreamConfig>[] = [];
    const jsm = {
      streams: {
        info: () =>
          Promise.reject(
            Object.assign(new Error("not found"), {
              api_error: { err_code: JsErr.streamNotFound },
            }),
          ),
        add: (config: Partial<StreamConfig>) => {
          added.push(config);
          return Promise.resolve({ config });
        },
      },
    } as unknown as JetStreamManager;
    const topology = new Topology({
      mesh: "m",
      ackWaitMs: 30_000,
      eventRetentionMs: 60_000,
      deadLetterRetentionMs: 60_000,
      replicas: 3,
      requireOpen: () => ({ nc: {} as NatsConnection, jsm }),
    });
    await topology.ensureStream({ name: "s", subjects: ["m.s"] }, false);
    expect(added).toHaveLength(1);
    expect(added[0]).toMatchObject({ name: "s", num_replicas: 3 });
  });
});
