// The dashboard's data: every host with its load, cluster totals and recent events, computed from
// the registry's memory and one events query (no per-host query), and the rendered partial kept for
// a second so that a classroom of browsers polling it costs one render.
import type { Request } from 'express';
import type { Event } from '../events/events.ts';
import { controllerAddressOf, handOutBase, loopbackNotice } from '../install.ts';
import { hostNames } from '../hosts/names.ts';
import type { Host } from '../hosts/registry.ts';
import type { ControllerServices } from '../services.ts';
import { pct } from './render.ts';

/** A host row as the dashboard and the hosts page show it. */
export interface HostRow {
  id: string;
  hostname: string;
  /** What the pages call it: its display name or hostname, with a short id where two read alike (server/hosts/names.ts). */
  label: string;
  /** The name an admin gave it, if any. */
  displayName?: string | undefined;
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

/** A host as the pages show it; `labels` from `hostNames(services).labels()`. */
export function hostRow(h: Host, labels: Map<string, string> = new Map(), displayName?: string): HostRow {
  const memTotal = h.capacity?.memoryMiB ?? 0;
  const memUsed = h.usage?.memoryUsedMiB ?? 0;
  return {
    id: h.id, hostname: h.hostname, label: labels.get(h.id) ?? h.hostname, displayName, url: h.url, state: h.state, hypervisor: h.hypervisor, cpuModel: h.cpuModel,
    threads: h.capacity?.threads ?? 0, cpuPct: Math.round(Math.max(0, Math.min(100, h.usage?.cpuPct ?? 0))),
    memUsed, memTotal, memPct: pct(memUsed, memTotal), vms: h.usage?.vmsTotal ?? 0, lastSeen: h.lastSeen, problem: h.problem,
  };
}

export interface DashboardData {
  hosts: HostRow[];
  /** The hosts drawn as tiles: all of a room's, at most DASHBOARD_TILES of a district's (the rest are on /hosts). */
  tiles: HostRow[];
  /** How many hosts have no tile. */
  moreHosts: number;
  totals: { ready: number; down: number; pending: number; draining: number; asleep: number; vms: number; vmsRunning: number; memUsed: number; memTotal: number; memPct: number };
  events: EventRow[];
  /** The first steps, until each is done (null once all are): a template, hosts, students. */
  checklist: { template: boolean; hosts: boolean; students: boolean } | null;
}

/** An event as the pages show it: what it is about, by name (the host's label as it is now). */
export interface EventRow {
  time: string;
  level: string;
  source: string;
  msg: string;
  /** The host's label (events about no host: none). */
  hostname?: string | undefined;
  vm?: string | undefined;
  user?: string | undefined;
}

export function eventRow(e: Event, labels: Map<string, string>): EventRow {
  const str = (v: unknown) => (typeof v === 'string' && v ? v : undefined);
  return {
    time: e.time, level: e.level, source: e.source, msg: e.msg,
    hostname: e.hostId ? labels.get(e.hostId) ?? e.hostId : undefined,
    vm: str(e.data?.vmName), user: str(e.data?.user),
  };
}

const cache = new WeakMap<ControllerServices, { at: number; data: DashboardData }>();

/**
 * How many host tiles the dashboard draws. A room (or a school) shows every host; at a district's
 * 1,000 the page was 385 KiB and its p99 79 ms under load (bench controller.dashboard_p99_ms_1000),
 * and a wall of 1,000 tiles tells a person nothing the totals and the Hosts page do not.
 */
export const DASHBOARD_TILES = 60;

/** All hosts in their order when they fit; else those that need a look first (down, pending, a problem), then the busiest. */
export function dashboardTiles(hosts: HostRow[], max = DASHBOARD_TILES): HostRow[] {
  if (hosts.length <= max) return hosts;
  const attention = (h: HostRow) => (h.state === 'down' || h.state === 'pending' || h.problem ? 1 : 0);
  return [...hosts].sort((a, b) => attention(b) - attention(a) || b.cpuPct - a.cpuPct || b.memPct - a.memPct).slice(0, max);
}

/** Hosts, totals and the 8 latest events; computed at most once a second for everyone. */
export function dashboardData(services: ControllerServices, now = Date.now()): DashboardData {
  const cached = cache.get(services);
  if (cached && now - cached.at < 1000) return cached.data;
  const names = hostNames(services);
  const labels = names.labels();
  const hosts = services.hosts.list().map((h) => hostRow(h, labels, names.displayName(h.id)));
  const totals = { ready: 0, down: 0, pending: 0, draining: 0, asleep: 0, vms: 0, vmsRunning: 0, memUsed: 0, memTotal: 0, memPct: 0 };
  for (const h of hosts) {
    totals[h.state]++;
    if (h.state !== 'down' && h.state !== 'asleep') {
      totals.memUsed += h.memUsed;
      totals.memTotal += h.memTotal;
    }
  }
  totals.memPct = pct(totals.memUsed, totals.memTotal);
  for (const [state, n] of Object.entries(services.vms.counts())) {
    totals.vms += n;
    if (state === 'running') totals.vmsRunning += n;
  }
  const events = services.events.list({ limit: 8 }).map((e) => eventRow(e, labels));
  const tiles = dashboardTiles(hosts);
  const data = { hosts, tiles, moreHosts: hosts.length - tiles.length, totals, events, checklist: firstSteps(services, hosts.length) };
  cache.set(services, { at: now, data });
  return data;
}

/**
 * The dashboard's first-run checklist: add a template, add hosts, add students. It stays until all
 * three are done once, then is gone for good (settings `dashboard.firstSteps.done`), even if a step is undone later.
 */
function firstSteps(services: ControllerServices, hostCount: number): DashboardData['checklist'] {
  if (services.store.get('SELECT 1 FROM settings WHERE key = ?', DONE_KEY)) return null;
  const steps = {
    template: services.templates.catalog.snapshot().length > 0 || services.hosts.records().some((h) => (h.status?.templates.length ?? 0) > 0),
    hosts: hostCount > 0,
    students: services.users.list().some((u) => u.role !== 'admin'),
  };
  if (steps.template && steps.hosts && steps.students) {
    services.store.run('INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)', DONE_KEY, new Date().toISOString());
    return null;
  }
  return steps;
}

const DONE_KEY = 'dashboard.firstSteps.done';

/** For a page opened through loopback: the address used and the one lab PCs use (server/install.ts). */
export function loopbackFor(req: Request, services: ControllerServices): ReturnType<typeof loopbackNotice> {
  const opened = `${req.protocol}://${req.get('host') ?? 'localhost'}`;
  return loopbackNotice(opened, handOutBase(opened, { http: controllerAddressOf(services.hosts).url, https: services.joinTokens.addresses[0] }));
}
