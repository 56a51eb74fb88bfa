import { describeTransportConformance } from "@nuropb/transport-testkit";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";

// The memory transport is the reference: it must pass the suite every broker transport runs.
const hub = createMemoryHub();

describeTransportConformance({
  name: "memory",
  create: () => createMemoryTransport({ hub, mesh: "conformance" }),
  disrupt: (transport) => hub.disconnect(transport),
  timeoutMs: 2_000,
  quietMs: 50,
});
