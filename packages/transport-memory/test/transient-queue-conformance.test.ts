import { describeTransientQueueConformance } from "@nuropb/transport-testkit";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";

// One hub plays the broker that outlives every transport.
const hub = createMemoryHub();

describeTransientQueueConformance({
  name: "memory",
  create: () => createMemoryTransport({ hub, mesh: "transient" }),
  timeoutMs: 2_000,
  quietMs: 50,
});
