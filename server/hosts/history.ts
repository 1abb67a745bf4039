// Each host's CPU and memory over the last hour, from the controller's own polls, in memory only (a
// restarted controller starts a new hour). One ring buffer per host, a sample every `spacingMs` at
// most: with polls every second the ring still covers the hour, and 1,000 hosts cost about 10 MB.
//
//   registry 'status' ──▶ record(hostId, sample) ──▶ ring [.., .., newest] ──▶ series(hostId): oldest first
//                         (a poll within spacingMs of the newest slot's start replaces its sample)
import type { HostStatus } from '../../wire/api.ts';
import type { HostRegistry } from './registry.ts';

/** One point of a host's history. */
export interface HostSample {
  /** When the poll answered (ms since epoch). */
  at: number;
  /** The host's CPU busy, 0..1. */
  cpu: number;
  /** Memory in use, in MiB, and the host's total. */
  memoryUsedMiB: number;
  memoryTotalMiB: number;
}

export interface HistoryOptions {
  /** How far back the history goes (default one hour). */
  windowMs?: number;
  /** The shortest time between two kept samples (default 10 s: 360 samples an hour). */
  spacingMs?: number;
}

/** A fixed-size ring: `push` overwrites the oldest once full. */
class Ring<T> {
  private readonly items: (T | undefined)[];
  private next = 0;
  private count = 0;

  constructor(size: number) {
    this.items = new Array<T | undefined>(size);
  }

  push(item: T): void {
    this.items[this.next] = item;
    this.next = (this.next + 1) % this.items.length;
    this.count = Math.min(this.count + 1, this.items.length);
  }

  replaceLast(item: T): void {
    if (this.count === 0) return this.push(item);
    this.items[(this.next - 1 + this.items.length) % this.items.length] = item;
  }

  /** Oldest first. */
  toArray(): T[] {
    const out: T[] = [];
    const start = (this.next - this.count + this.items.length) % this.items.length;
    for (let i = 0; i < this.count; i++) out.push(this.items[(start + i) % this.items.length]!);
    return out;
  }
}

/** The samples one poll answer gives. */
export function sampleOf(status: HostStatus, at: number): HostSample {
  return {
    at,
    cpu: Math.max(0, Math.min(1, status.cpu.loadPct / 100)),
    memoryUsedMiB: Math.max(0, status.memory.totalMiB - status.memory.freeMiB),
    memoryTotalMiB: status.memory.totalMiB,
  };
}

export class HostHistory {
  readonly windowMs: number;
  readonly spacingMs: number;
  private readonly rings = new Map<string, { samples: Ring<HostSample>; slotStart: number }>();

  constructor(opts: HistoryOptions = {}) {
    this.windowMs = opts.windowMs ?? 3_600_000;
    this.spacingMs = opts.spacingMs ?? 10_000;
  }

  /** Keeps every poll answer of `registry`'s hosts, and forgets removed hosts. */
  follow(registry: HostRegistry): this {
    registry.on('status', (host, status) => this.record(host.id, sampleOf(status, Date.now())));
    registry.on('removed', (hostId) => this.forget(hostId));
    return this;
  }

  record(hostId: string, sample: HostSample): void {
    let ring = this.rings.get(hostId);
    if (!ring) this.rings.set(hostId, ring = { samples: new Ring(Math.ceil(this.windowMs / this.spacingMs) + 1), slotStart: -Infinity });
    // within the newest sample's slot, the latest poll replaces it; past the slot, a new one begins
    if (sample.at - ring.slotStart < this.spacingMs) return ring.samples.replaceLast(sample);
    ring.samples.push(sample);
    ring.slotStart = sample.at;
  }

  /** The host's samples of the last `windowMs`, oldest first (none: never polled, or removed). */
  series(hostId: string, now = Date.now()): HostSample[] {
    return (this.rings.get(hostId)?.samples.toArray() ?? []).filter((s) => now - s.at <= this.windowMs);
  }

  forget(hostId: string): void {
    this.rings.delete(hostId);
  }
}
