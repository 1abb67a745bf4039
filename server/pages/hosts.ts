// A host's own page (/hosts/:id, admins): its CPU and memory over the last hour as a chart drawn
// here in SVG (server/hosts/history.ts keeps the samples), what it uses now, and its VMs with theirs.
// Also the sparklines of the hosts list: the same samples, drawn small.
//
//   history.series(id) ──▶ points(samples, box) ──▶ <polyline points="x,y ..."> in host.hbs / host-list.hbs
import express, { type Router } from 'express';
import { hostNames } from '../hosts/names.ts';
import type { HostSample } from '../hosts/history.ts';
import type { ControllerServices } from '../services.ts';
import { requireAdmin } from '../users/auth.ts';
import { hostRow } from './dashboard.ts';
import { me } from './forms.ts';
import { pct, render } from './render.ts';

/** A drawing box: the samples of the last `windowMs` before `now` fill its width, 0..1 its height. */
interface Box {
  width: number;
  height: number;
  now: number;
  windowMs: number;
}

/** `x,y x,y ...` of CPU busy and memory in use (both 0..1) in `box`, oldest on the left. */
export function points(samples: readonly HostSample[], box: Box): { cpu: string; mem: string } {
  const x = (at: number) => round(((at - (box.now - box.windowMs)) / box.windowMs) * box.width);
  const y = (ratio: number) => round(box.height - Math.max(0, Math.min(1, ratio)) * box.height);
  const cpu: string[] = [];
  const mem: string[] = [];
  for (const s of samples) {
    if (s.at < box.now - box.windowMs) continue;
    cpu.push(`${x(s.at)},${y(s.cpu)}`);
    mem.push(`${x(s.at)},${y(s.memoryTotalMiB > 0 ? s.memoryUsedMiB / s.memoryTotalMiB : 0)}`);
  }
  return { cpu: cpu.join(' '), mem: mem.join(' ') };
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

/** Every host's sparkline of the last hour, by host id (hosts never polled have none). */
export function hostSparklines(services: ControllerServices, now = Date.now()): Record<string, { cpu: string; mem: string }> {
  const out: Record<string, { cpu: string; mem: string }> = {};
  for (const h of services.hosts.records()) {
    const series = services.history.series(h.id, now);
    if (series.length > 1) out[h.id] = points(series, { width: 120, height: 24, now, windowMs: services.history.windowMs });
  }
  return out;
}

const CHART = { width: 600, height: 160 };

/** The host page's chart: the lines, the grid (25 % steps) and the time marks (every 15 minutes). */
export function hostChart(samples: readonly HostSample[], now: number, windowMs: number) {
  const lines = points(samples, { ...CHART, now, windowMs });
  const grid = [0.25, 0.5, 0.75].map((r) => ({ y: CHART.height - r * CHART.height, label: `${r * 100}%` }));
  const marks = [60, 45, 30, 15, 0].filter((m) => m * 60_000 <= windowMs)
    .map((m) => ({ x: round(CHART.width - (m * 60_000 / windowMs) * CHART.width), label: m === 0 ? 'now' : `−${m} min` }));
  const last = samples.at(-1);
  return {
    ...CHART, ...lines, grid, marks, samples: samples.length,
    summary: last
      ? `Over the last ${Math.round((now - samples[0]!.at) / 60_000)} minutes: CPU between ${Math.round(Math.min(...samples.map((s) => s.cpu)) * 100)}% and ${Math.round(Math.max(...samples.map((s) => s.cpu)) * 100)}%, now ${Math.round(last.cpu * 100)}%; memory now ${pct(last.memoryUsedMiB, last.memoryTotalMiB)}%.`
      : 'No samples yet: the controller draws what it sees from its polls, from its start on.',
  };
}

export function hostPages(services: ControllerServices): Router {
  const r = express.Router();
  r.get('/hosts/:id', requireAdmin(), (req, res) => {
    const host = services.hosts.get(String(req.params.id));
    const names = hostNames(services);
    const row = hostRow(host, names.labels(), names.displayName(host.id));
    const now = Date.now();
    const usage = new Map((services.hosts.record(host.id)?.status?.vmList ?? []).map((v) => [v.id, v.usage]));
    const vms = services.vms.list(me(res), { host: host.id }).map((vm) => {
      const u = vm.state === 'running' ? usage.get(vm.id) : undefined;
      return {
        ...vm,
        cpuText: u?.cpuRatio !== undefined ? `${Math.round(u.cpuRatio * 100)}%` : '–',
        memoryUsedMiB: u?.memoryUsedMiB,
        memoryPct: u?.memoryUsedMiB !== undefined ? pct(u.memoryUsedMiB, vm.memoryMiB) : undefined,
      };
    });
    render(req, res, {
      page: 'host', partial: 'host-detail', title: row.label,
      data: { host: row, chart: hostChart(services.history.series(host.id, now), now, services.history.windowMs), vms },
    });
  });
  return r;
}
