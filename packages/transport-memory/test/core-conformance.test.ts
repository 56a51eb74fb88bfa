import { describeCoreConformance } from "@nuropb/transport-testkit";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";

const hub = createMemoryHub();

describeCoreConformance({
  name: "memory",
  create: () => createMemoryTransport({ hub }),
  deadLetterCount: () => hub.deadLetters().length,
  disrupt: (t) => hub.disconnect(t),
});
