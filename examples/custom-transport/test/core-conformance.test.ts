import { describeCoreConformance } from "@nuropb/transport-testkit";
import { createInProcessBus, createInProcessTransport } from "../src/index.ts";

// Every rule of @nuropb/core over the example transport. It keeps no dead letters, so there is
// no deadLetterCount to give; it cannot be disrupted, so there is no disrupt either.
const bus = createInProcessBus("core-conformance");

describeCoreConformance({
  name: "in-process (example)",
  create: () => createInProcessTransport({ bus }),
});
