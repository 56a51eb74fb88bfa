import { describeTransportConformance } from "@nuropb/transport-testkit";
import { createInProcessBus, createInProcessTransport } from "../src/index.ts";

// The frame-level contract: every test that does not need an optional capability.
const bus = createInProcessBus("transport-conformance");

describeTransportConformance({
  name: "in-process (example)",
  create: () => createInProcessTransport({ bus }),
  timeoutMs: 2_000,
  quietMs: 50,
});
