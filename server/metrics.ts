// `/metrics` in the Prometheus text format: HTTP requests and latencies, hosts and VMs by state,
// polls, each host's and each VM's CPU and memory, and the process's memory. Counters live in memory;
// gauges are read when scraped (docs/monitoring.md). Names follow Prometheus' conventions: base units
// in the name (`_bytes`, `_ratio` for 0..1), `_total` for counters only, one label per dimension.
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import type { RequestHandler } from 'express';
import type { HostStatus } from '../wire/api.ts';
import type { ControllerServices } from './services.ts';

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly histogram = new Map<string, { buckets: number[]; sum: number; count: number }>();

  /** Counts every request by method, route pattern and status, and times it. */
  middleware(): RequestHandler {
    return (req, res, next) => {
      const start = process.hrtime.bigint();
      res.on('finish', () => {
        const route = req.route?.path ? `${req.baseUrl}${String(req.route.path)}` : res.statusCode === 404 ? 'unmatched' : req.baseUrl || 'other';
        const key = `method="${req.method}",route="${escape(route)}",status="${res.statusCode}"`;
        this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
        const seconds = Number(process.hrtime.bigint() - start) / 1e9;
        const hk = `method="${req.method}",route="${escape(route)}"`;
        let h = this.histogram.get(hk);
        if (!h) this.histogram.set(hk, h = { buckets: BUCKETS.map(() => 0), sum: 0, count: 0 });
        for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) h.buckets[i]!++;
        h.sum += seconds;
        h.count++;
      });
      next();
    };
  }

  /** The whole exposition text. */
  render(services: ControllerServices): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, lines: string[]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines);
    };
    metric('skyhost_http_requests_total', 'counter', 'HTTP requests answered', [...this.requests].map(([k, v]) => `skyhost_http_requests_total{${k}} ${v}`));
    const hl: string[] = [];
    for (const [k, h] of this.histogram) {
      BUCKETS.forEach((b, i) => hl.push(`skyhost_http_request_duration_seconds_bucket{${k},le="${b}"} ${h.buckets[i]}`));
      hl.push(`skyhost_http_request_duration_seconds_bucket{${k},le="+Inf"} ${h.count}`);
      hl.push(`skyhost_http_request_duration_seconds_sum{${k}} ${h.sum}`, `skyhost_http_request_duration_seconds_count{${k}} ${h.count}`);
    }
    metric('skyhost_http_request_duration_seconds', 'histogram', 'time to answer an HTTP request', hl);
    const hostStates: Record<string, number> = { pending: 0, ready: 0, down: 0, draining: 0 };
    let memTotal = 0;
    let memFree = 0;
    for (const h of services.hosts.records()) {
      hostStates[h.state] = (hostStates[h.state] ?? 0) + 1;
      if (h.status && h.state !== 'down') {
        memTotal += h.status.memory.totalMiB;
        memFree += h.status.memory.freeMiB;
      }
    }
    metric('skyhost_hosts', 'gauge', 'hosts by state', Object.entries(hostStates).map(([s, n]) => `skyhost_hosts{state="${s}"} ${n}`));
    const vmStates: Record<string, number> = { creating: 0, running: 0, shutoff: 0, paused: 0, unknown: 0, error: 0, deleting: 0, ...services.vms.counts() };
    metric('skyhost_vms', 'gauge', 'VMs by state', Object.entries(vmStates).map(([s, n]) => `skyhost_vms{state="${s}"} ${n}`));
    metric('skyhost_cluster_memory_mib', 'gauge', 'memory of hosts that answer polls', [
      `skyhost_cluster_memory_mib{kind="total"} ${memTotal}`, `skyhost_cluster_memory_mib{kind="free"} ${memFree}`]);
    hostAndVmGauges(services, metric);
    const mem = process.memoryUsage();
    metric('process_resident_memory_bytes', 'gauge', 'resident memory of the controller', [`process_resident_memory_bytes ${mem.rss}`]);
    metric('nodejs_heap_used_bytes', 'gauge', 'V8 heap in use', [`nodejs_heap_used_bytes ${mem.heapUsed}`]);
    metric('nodejs_heap_total_bytes', 'gauge', 'V8 heap reserved', [`nodejs_heap_total_bytes ${mem.heapTotal}`]);
    metric('nodejs_external_memory_bytes', 'gauge', 'memory outside the V8 heap (buffers)', [`nodejs_external_memory_bytes ${mem.external}`]);
    metric('nodejs_array_buffers_bytes', 'gauge', 'ArrayBuffers and Buffers, part of the external memory', [`nodejs_array_buffers_bytes ${mem.arrayBuffers}`]);
    metric('nodejs_v8_malloced_bytes', 'gauge', 'memory V8 itself has from malloc (compiler zones, tables)', [`nodejs_v8_malloced_bytes ${getHeapStatistics().malloced_memory}`]);
    const spaces = getHeapSpaceStatistics();
    metric('nodejs_heap_space_size_bytes', 'gauge', 'V8 heap reserved, by space (new_space is the young generation, old_space and large_object_space the old)',
      spaces.map((sp) => `nodejs_heap_space_size_bytes{space="${sp.space_name}"} ${sp.space_size}`));
    metric('nodejs_heap_space_used_bytes', 'gauge', 'V8 heap in use, by space', spaces.map((sp) => `nodejs_heap_space_used_bytes{space="${sp.space_name}"} ${sp.space_used_size}`));
    return out.join('\n') + '\n';
  }
}

type MetricFn = (name: string, type: string, help: string, lines: string[]) => void;

const MiB = 1024 * 1024;

/**
 * Per host (`host` its id, `hostname`) and per VM (`vm` its id, `name`, `host`, `owner`): the figures of
 * each host's last poll answer, which carries its VMs' usage. A host that does not answer has no usage lines.
 */
function hostAndVmGauges(services: ControllerServices, metric: MetricFn): void {
  const up: string[] = [];
  const cpu: string[] = [];
  const memUsed: string[] = [];
  const memTotal: string[] = [];
  const hostVms: string[] = [];
  const usage = new Map<string, NonNullable<NonNullable<HostStatus['vmList'][number]['usage']>>>();
  for (const h of services.hosts.records()) {
    const l = `host="${escape(h.id)}",hostname="${escape(h.hostname)}"`;
    const answers = h.status !== null && (h.state === 'ready' || h.state === 'draining');
    up.push(`skyhost_host_up{${l}} ${answers ? 1 : 0}`);
    if (!answers || !h.status) continue;
    const s = h.status;
    cpu.push(`skyhost_host_cpu_ratio{${l}} ${round(Math.max(0, Math.min(1, s.cpu.loadPct / 100)))}`);
    memUsed.push(`skyhost_host_memory_used_bytes{${l}} ${(s.memory.totalMiB - s.memory.freeMiB) * MiB}`);
    memTotal.push(`skyhost_host_memory_total_bytes{${l}} ${s.memory.totalMiB * MiB}`);
    hostVms.push(`skyhost_host_vms_running{${l}} ${s.vms.running}`);
    for (const v of s.vmList) if (v.usage) usage.set(v.id, v.usage);
  }
  metric('skyhost_host_up', 'gauge', 'whether the host answered its last poll as a member (1) or not (0)', up);
  metric('skyhost_host_cpu_ratio', 'gauge', 'CPU busy of the host at its last poll (0..1)', cpu);
  metric('skyhost_host_memory_used_bytes', 'gauge', 'memory in use on the host at its last poll', memUsed);
  metric('skyhost_host_memory_total_bytes', 'gauge', 'memory of the host', memTotal);
  metric('skyhost_host_vms_running', 'gauge', 'VMs running on the host at its last poll', hostVms);

  const running: string[] = [];
  const vcpus: string[] = [];
  const memory: string[] = [];
  const vmCpu: string[] = [];
  const vmMem: string[] = [];
  for (const v of services.vms.list(services.system)) {
    const l = `vm="${escape(v.id)}",name="${escape(v.name)}",host="${escape(v.host)}",owner="${escape(v.owner)}"`;
    running.push(`skyhost_vm_running{${l}} ${v.state === 'running' ? 1 : 0}`);
    vcpus.push(`skyhost_vm_vcpus{${l}} ${v.vcpus}`);
    memory.push(`skyhost_vm_memory_bytes{${l}} ${v.memoryMiB * MiB}`);
    const u = v.state === 'running' ? usage.get(v.id) : undefined;
    if (u?.cpuRatio !== undefined) vmCpu.push(`skyhost_vm_cpu_ratio{${l}} ${round(u.cpuRatio)}`);
    if (u?.memoryUsedMiB !== undefined) vmMem.push(`skyhost_vm_memory_used_bytes{${l}} ${u.memoryUsedMiB * MiB}`);
  }
  metric('skyhost_vm_running', 'gauge', 'whether the VM runs (1) or not (0)', running);
  metric('skyhost_vm_vcpus', 'gauge', 'virtual CPUs the VM has', vcpus);
  metric('skyhost_vm_memory_bytes', 'gauge', 'memory the VM was given', memory);
  metric('skyhost_vm_cpu_ratio', 'gauge', 'CPU busy of the VM\'s vCPUs at its host\'s last poll (0..1)', vmCpu);
  metric('skyhost_vm_memory_used_bytes', 'gauge', 'memory the VM takes on its host at its host\'s last poll', vmMem);
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function escape(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}
