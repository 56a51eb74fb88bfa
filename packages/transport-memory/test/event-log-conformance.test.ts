import { describeEventLogConformance } from "@nuropb/transport-testkit";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";

// The reference event log: the hub keeps one per mesh once it is set up.
const hub = createMemoryHub();

describeEventLogConformance({
  name: "memory",
  create: () => createMemoryTransport({ hub, mesh: "history" }),
  createWithoutLog: () => createMemoryTransport({ hub, mesh: "no-history" }),
  timeoutMs: 2_000,
  quietMs: 50,
  clockStepMs: 5,
});
