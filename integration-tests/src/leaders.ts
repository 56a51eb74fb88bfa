/** Anything that says whether it leads (an election, a service). */
interface Leading {
  readonly isLeader: boolean;
}

/**
 * Samples `all` every `everyMs`; the function returned stops sampling and gives the most
 * leaders seen at once (including a last look).
 */
export function sampleLeaders(all: readonly Leading[], everyMs: number): () => number {
  let most = 0;
  const count = (): number => all.filter((e) => e.isLeader).length;
  const timer = setInterval(() => (most = Math.max(most, count())), everyMs);
  return () => {
    clearInterval(timer);
    return Math.max(most, count());
  };
}
