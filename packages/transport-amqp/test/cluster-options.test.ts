import { NuropbTransportError } from "@nuropb/protocol";
import { describe, expect, it } from "vitest";
import { resolveOptions } from "../src/options.ts";
import { failoverOrder } from "../src/session.ts";
import { queueConflictError, serviceQueueArguments } from "../src/topology.ts";

// Issue #19: cluster addresses, failover order, quorum queue arguments, conflicting declarations.

const x = { rpcExchange: "rpc", eventsExchange: "events", dlExchange: "dl" };
const spec = { service: "jobs", rpcBindings: [], eventBindings: [], prefetch: 1 };

describe("cluster addresses", () => {
  it("reads a comma list of hosts in a URL, sharing credentials and vhost", () => {
    const o = resolveOptions({ url: "amqp://u:s3cret-pw@h1:5672,h2:5673,h3/mesh" });
    expect(o.targets.map((t) => `${t.host}:${t.port}`)).toEqual(["h1:5672", "h2:5673", "h3:5672"]);
    expect(o.targets.every((t) => t.vhost === "mesh" && t.username === "u")).toBe(true);
    expect(o.target).toBe(o.targets[0]);
    expect(o.failover).toBe("in-order");
  });

  it("takes an array of URLs and settings objects", () => {
    const o = resolveOptions({
      urls: [
        "amqp://guest:guest@a:1/m",
        { host: "b", port: 2, vhost: "m" },
        "amqp://guest:guest@c:3,d:4/m",
      ],
      failover: "random",
    });
    expect(o.targets.map((t) => t.host)).toEqual(["a", "b", "c", "d"]);
    expect(o.failover).toBe("random");
  });

  it("refuses mixed vhosts or credentials, url with urls, an empty list, a bad order", () => {
    expect(() => resolveOptions({ urls: ["amqp://h1/a", "amqp://h2/b"] })).toThrow(/same vhost/);
    const err = (() => {
      try {
        resolveOptions({ urls: ["amqp://u:first-secret@h1/a", "amqp://u:other-secret@h2/a"] });
      } catch (e) {
        return e as Error;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(TypeError);
    expect(err?.message).toMatch(/same user and password/);
    expect(err?.message).not.toMatch(/secret/);
    expect(() => resolveOptions({ url: "amqp://h/a", urls: ["amqp://h/a"] })).toThrow(/not both/);
    expect(() => resolveOptions({ urls: [] })).toThrow(/non-empty array/);
    expect(() => resolveOptions({ url: "amqp://h1,,h2/a" })).toThrow(/empty host/);
    expect(() => resolveOptions({ url: "amqp://h/a", failover: "nearest" as never })).toThrow(
      /failover must be/,
    );
  });

  it("never echoes the password of a bad comma URL", () => {
    let message = "";
    try {
      resolveOptions({ url: "amqp://u:hunter2-pw@h1:99999,h2/a" });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).not.toBe("");
    expect(message).not.toContain("hunter2-pw");
  });

  it("tries the nodes as listed, or shuffled for random failover", () => {
    const inOrder = resolveOptions({ url: "amqp://h1,h2,h3,h4,h5,h6/a" });
    expect(failoverOrder(inOrder).map((t) => t.host)).toEqual(["h1", "h2", "h3", "h4", "h5", "h6"]);
    const random = resolveOptions({ url: "amqp://h1,h2,h3,h4,h5,h6/a", failover: "random" });
    const firsts = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const order = failoverOrder(random).map((t) => t.host);
      expect([...order].sort()).toEqual(["h1", "h2", "h3", "h4", "h5", "h6"]);
      firsts.add(order[0] as string);
    }
    expect(firsts.size).toBeGreaterThan(1);
  });
});

describe("service queue arguments", () => {
  it("declares classic queues exactly as Python does", () => {
    expect(serviceQueueArguments(spec, x)).toEqual({ "x-dead-letter-exchange": "dl" });
    expect(serviceQueueArguments({ ...spec, queueType: "classic" }, x)).toEqual({
      "x-dead-letter-exchange": "dl",
    });
  });

  it("declares quorum queues with at-least-once dead-lettering and the delivery limit", () => {
    expect(serviceQueueArguments({ ...spec, queueType: "quorum", deliveryLimit: 4 }, x)).toEqual({
      "x-dead-letter-exchange": "dl",
      "x-queue-type": "quorum",
      "x-dead-letter-strategy": "at-least-once",
      "x-overflow": "reject-publish",
      "x-delivery-limit": 4,
    });
    expect(serviceQueueArguments({ ...spec, queueType: "quorum" }, x)).not.toHaveProperty(
      "x-delivery-limit",
    );
  });

  it("turns the broker's 406 into a typed error naming the argument", () => {
    const broker = Object.assign(
      new Error(
        `Operation failed: QueueDeclare; 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'nuropb-jobs' in vhost 'm': received the value 'quorum' of type 'longstr' but current is none"`,
      ),
      { code: 406 },
    );
    const err = queueConflictError(broker, "nuropb-jobs", { "x-queue-type": "quorum" });
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect(err?.message).toContain("argument 'x-queue-type' differs");
    expect(err?.message).toContain("the queue has: none");
    expect(err?.retryable).toBe(false);
    expect(err?.details).toMatchObject({
      permanent: true,
      replyCode: 406,
      conflict: { queue: "nuropb-jobs", argument: "x-queue-type" },
    });
    expect(queueConflictError(Object.assign(new Error("x"), { code: 404 }), "q", {})).toBe(
      undefined,
    );
  });
});
