import { describeCallLaterConformance } from "@nuropb/transport-testkit";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";

const hub = createMemoryHub();

describeCallLaterConformance({
  name: "memory",
  create: () => createMemoryTransport({ hub }),
  deadLetterCount: () => hub.deadLetters().length,
  deadlineMs: 50,
});
