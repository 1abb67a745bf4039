// The dashboard's data: every host with its load, cluster totals and recent events, computed from
// the registry's memory and one events query (no per-host query), and the rendered partial kept for
// a second so that a classroom of browsers polling it costs one render.
import type { Host } from '../hosts/registry.ts';
import type { ControllerServices } from '../services.ts';
import { pct } from './render.ts';

/** A host row as the dashboard and the hosts page show it. */
export interface HostRow {
  id: string;
  hostname: string;
  url: string;
  state: Host['state'];
  /** Why the host is refused or unreachable as enrolled (e.g. its certificate changed). */
  problem?: string | undefined;
  hypervisor?: string | undefined;
  cpuModel?: string | undefined;
  threads: number;
  cpuPct: number;
  memUsed: number;
  memTotal: number;
  memPct: number;
  vms: number;
  lastSeen?: string | undefined;
}

export function hostRow(h: Host): HostRow {
  const memTotal = h.capacity?.memoryMiB ?? 0;
  const memUsed = h.usage?.memoryUsedMiB ?? 0;
  return {
    id: h.id, hostname: h.hostname, url: h.url, state: h.state, hypervisor: h.hypervisor, cpuModel: h.cpuModel,
    threads: h.capacity?.threads ?? 0, cpuPct: Math.round(Math.max(0, Math.min(100, h.usage?.cpuPct ?? 0))),
    memUsed, memTotal, memPct: pct(memUsed, memTotal), vms: h.usage?.vmsTotal ?? 0, lastSeen: h.lastSeen, problem: h.problem,
  };
}

export interface DashboardData {
  hosts: HostRow[];
  totals: { ready: number; down: number; pending: number; draining: number; vms: number; vmsRunning: number; memUsed: number; memTotal: number; memPct: number };
  events: Array<{ time: string; level: string; source: string; msg: string; hostname?: string | undefined }>;
}

const cache = new WeakMap<ControllerServices, { at: number; data: DashboardData }>();

/** Hosts, totals and the 8 latest events; computed at most once a second for everyone. */
export function dashboardData(services: ControllerServices, now = Date.now()): DashboardData {
  const cached = cache.get(services);
  if (cached && now - cached.at < 1000) return cached.data;
  const hosts = services.hosts.list().map(hostRow);
  const totals = { ready: 0, down: 0, pending: 0, draining: 0, vms: 0, vmsRunning: 0, memUsed: 0, memTotal: 0, memPct: 0 };
  for (const h of hosts) {
    totals[h.state]++;
    if (h.state !== 'down') {
      totals.memUsed += h.memUsed;
      totals.memTotal += h.memTotal;
    }
  }
  totals.memPct = pct(totals.memUsed, totals.memTotal);
  for (const [state, n] of Object.entries(services.vms.counts())) {
    totals.vms += n;
    if (state === 'running') totals.vmsRunning += n;
  }
  const names = new Map(hosts.map((h) => [h.id, h.hostname]));
  const events = services.events.list({ limit: 8 }).map((e) => ({
    time: e.time, level: e.level, source: e.source, msg: e.msg, hostname: e.hostId ? names.get(e.hostId) ?? e.hostId : undefined,
  }));
  const data = { hosts, totals, events };
  cache.set(services, { at: now, data });
  return data;
}
