import { serviceQueueName } from "@nuropb/protocol";
import type { MemoryHub } from "./memory-hub.ts";

/**
 * A backlog probe on a memory hub (for `withLeaderWatch` of `@nuropb/runner`): the messages
 * waiting in the service's queue, and the hub's dead letters that came from it.
 */
export function createMemoryBacklogProbe(
  hub: MemoryHub,
  mesh?: string,
): (service: string) => Promise<{ depth: number; deadLetters: number }> {
  if (typeof hub !== "object" || hub === null || typeof hub.queueDepth !== "function") {
    throw new TypeError("createMemoryBacklogProbe: hub must be a MemoryHub");
  }
  return (service) => {
    const queue = serviceQueueName(service);
    return Promise.resolve({
      depth: hub.queueDepth(queue, mesh),
      deadLetters: hub.deadLetters(mesh).filter((d) => d.queue === queue).length,
    });
  };
}
