// The original design's placement, kept as the bench's baseline: the least-loaded host by memory in
// use at the last poll, with no feasibility checks and no count of placements still in flight.
import type { SchedulerHost } from './index.ts';

/** The host the original design would pick, or null with no polled host. Ties: first in the list. */
export function placeOriginal(hosts: readonly SchedulerHost[]): string | null {
  let best: string | null = null;
  let bestUsed = Infinity;
  for (const host of hosts) {
    const s = host.status;
    if (host.state !== 'ready' || !s || s.memory.totalMiB <= 0) continue;
    const used = 1 - s.memory.freeMiB / s.memory.totalMiB;
    if (used < bestUsed) {
      bestUsed = used;
      best = host.id;
    }
  }
  return best;
}
