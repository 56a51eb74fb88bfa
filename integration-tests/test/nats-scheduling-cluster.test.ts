import { afterAll, beforeAll, expect, it } from "vitest";
import { connect } from "nats";
import { newId } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { testFrame, testServiceSpec, uniqueName } from "@nuropb/transport-testkit";
import { launchNatsCluster, type NatsCluster } from "../src/brokers/nats-cluster.ts";

// Scheduling on a 3-server NATS cluster: the delay stream and the claims buckets take the
// transport's `replicas`, so delayed frames (deadlines, retries) and claims survive a server.
let cluster: NatsCluster;
beforeAll(async () => {
  cluster = await launchNatsCluster(3);
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
}, 60_000);

it("creates the delay stream and the claims buckets with the transport's replicas", async () => {
  const mesh = `sc${newId().slice(0, 10)}`;
  const t = createNatsTransport({ servers: cluster.urls.join(","), mesh, replicas: 3 });
  const nc = await connect({ servers: cluster.urls.join(",") });
  try {
    await t.connect();
    const service = uniqueName();
    await t.consumeService(testServiceSpec(service), (d) => d.ack());
    await t.scheduling!.sendDelayed(service, testFrame("x"), 10);
    await t.scheduling!.openClaim("k", 10_000);
    expect(await t.scheduling!.claim("k", "a")).toBe("won");
    const jsm = await nc.jetstreamManager();
    const delayed = await jsm.streams.info(`NUROPB-${mesh}-DELAYED`);
    expect(delayed.config.num_replicas).toBe(3);
    // The claims are tiered by ttl (1 h, 1 day, the longest): every bucket takes the replicas.
    const bucket = `KV_nuropb_claims_${Buffer.from(mesh).toString("hex")}`;
    for (const suffix of ["_1h", "_1d", ""]) {
      const claims = await jsm.streams.info(`${bucket}${suffix}`);
      expect(claims.config.num_replicas).toBe(3);
    }
  } finally {
    await nc.close();
    await t.close();
  }
}, 60_000);
