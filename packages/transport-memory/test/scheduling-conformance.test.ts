import { describeSchedulingConformance } from "@nuropb/transport-testkit";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";

// The hub holds delayed frames and claims (it plays the broker and outlives every transport).
const hub = createMemoryHub();

describeSchedulingConformance({
  name: "memory",
  create: () => createMemoryTransport({ hub, mesh: "scheduling" }),
  timeoutMs: 2_000,
  expirySlackMs: 50,
});
