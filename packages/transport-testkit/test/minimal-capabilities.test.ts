import { describeTransportConformance } from "@nuropb/transport-testkit";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import type { Transport } from "@nuropb/protocol";

// A transport that claims none of the optional capabilities and offers no `disrupt`: the suite must
// register only the basic contract, and the memory transport (which does more) must still pass it.
function withoutOptionalCapabilities(inner: Transport): Transport {
  const capabilities = Object.freeze({
    ...inner.capabilities,
    notDelivered: false,
    redelivery: false,
    deadLetter: false,
    messageTtl: false,
  });
  return {
    kind: "memory-minimal",
    mesh: inner.mesh,
    capabilities,
    get state() {
      return inner.state;
    },
    connect: (o) => inner.connect(o),
    close: () => inner.close(),
    closed: () => inner.closed(),
    send: (to, frame) => inner.send(to, frame),
    consumeService: (spec, handler) => inner.consumeService(spec, handler),
    consumeResponses: (spec, handler) => inner.consumeResponses(spec, handler),
    events: () => inner.events(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
}

const hub = createMemoryHub();

describeTransportConformance({
  name: "memory without optional capabilities",
  create: () => withoutOptionalCapabilities(createMemoryTransport({ hub, mesh: "minimal" })),
  timeoutMs: 2_000,
  quietMs: 50,
});
