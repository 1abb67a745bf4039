// `/metrics` in the Prometheus text format: HTTP requests and latencies, hosts and VMs by state,
// polls, each host's and each VM's CPU and memory, and the process's memory. Counters live in memory;
// gauges are read when scraped (docs/monitoring.md). Names follow Prometheus' conventions: base units
// in the name (`_bytes`, `_ratio` for 0..1), `_total` for counters only, one label per dimension.
//
// At 1,000 hosts and 10,000 VMs the text is ~55,000 lines (6 MB), all made on the event loop. So the
// lines are written straight into one buffer, each VM's escaped labels are kept from one scrape to the
// next, VMs are read as records (not as API views), and a text is sent again to scrapes that come
// within `REUSE_MS` of it (`/metrics` needs no sign-in: a flood of scrapes costs one render per window).
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import type { RequestHandler } from 'express';
import type { HostStatus } from '../wire/api.ts';
import type { HostRecord } from './hosts/registry.ts';
import type { VmRecord } from './vms/records.ts';
import type { ControllerServices } from './services.ts';

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * How long a rendered text is sent again (ms). The host and VM figures in it are already up to one poll
 * (5 s) old and scrape intervals are 5 s or more, so one Prometheus always gets a fresh text; a second
 * scraper, or anyone reloading the page, within 2 s gets the same one.
 */
export const REUSE_MS = 2000;

export interface MetricsOptions {
  /** See REUSE_MS; 0 renders every scrape. */
  reuseMs?: number;
  /** A monotonic clock in ms (tests pass their own). */
  now?: () => number;
}

export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly histogram = new Map<string, { buckets: number[]; sum: number; count: number }>();
  /** Each VM's escaped label set from the last render (by VM id). */
  private readonly vmLabels = new Map<string, VmLabels>();
  private renders = 0;
  /** The size of the last text, to size the next one's buffer. */
  private lastBytes = 64 * 1024;
  private last: { at: number; text: Buffer } | undefined;
  private readonly reuseMs: number;
  private readonly now: () => number;

  constructor(opts: MetricsOptions = {}) {
    this.reuseMs = opts.reuseMs ?? REUSE_MS;
    this.now = opts.now ?? (() => performance.now());
  }

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

  /** The text for a scrape: the one rendered less than `reuseMs` ago, else a new one. */
  scrape(services: ControllerServices): Buffer {
    const now = this.now();
    if (this.last && now - this.last.at < this.reuseMs) return this.last.text;
    const text = this.render(services);
    this.last = { at: now, text };
    // Let go of the text once it is too old to send (6 MB at 10,000 VMs); until the next scrape otherwise.
    if (this.reuseMs > 0) {
      setTimeout(() => {
        if (this.last?.text === text) this.last = undefined;
      }, this.reuseMs).unref();
    }
    return text;
  }

  /** The whole exposition text, rendered now, as UTF-8. */
  render(services: ControllerServices): Buffer {
    const out = new Exposition(this.lastBytes + (this.lastBytes >> 3));
    let requests = '';
    for (const [k, v] of this.requests) requests += `skyhost_http_requests_total{${k}} ${v}\n`;
    out.family('skyhost_http_requests_total', 'counter', 'HTTP requests answered', requests);
    let hl = '';
    for (const [k, h] of this.histogram) {
      for (let i = 0; i < BUCKETS.length; i++) hl += `skyhost_http_request_duration_seconds_bucket{${k},le="${BUCKETS[i]}"} ${h.buckets[i]}\n`;
      hl += `skyhost_http_request_duration_seconds_bucket{${k},le="+Inf"} ${h.count}\n`;
      hl += `skyhost_http_request_duration_seconds_sum{${k}} ${h.sum}\nskyhost_http_request_duration_seconds_count{${k}} ${h.count}\n`;
    }
    out.family('skyhost_http_request_duration_seconds', 'histogram', 'time to answer an HTTP request', hl);
    const hosts = services.hosts.records();
    const hostStates: Record<string, number> = { pending: 0, ready: 0, down: 0, draining: 0 };
    let memTotal = 0;
    let memFree = 0;
    for (const h of hosts) {
      hostStates[h.state] = (hostStates[h.state] ?? 0) + 1;
      if (h.status && h.state !== 'down') {
        memTotal += h.status.memory.totalMiB;
        memFree += h.status.memory.freeMiB;
      }
    }
    out.family('skyhost_hosts', 'gauge', 'hosts by state', lines(Object.entries(hostStates).map(([s, n]) => `skyhost_hosts{state="${s}"} ${n}`)));
    const vmStates: Record<string, number> = { creating: 0, running: 0, shutoff: 0, paused: 0, unknown: 0, error: 0, deleting: 0, ...services.vms.counts() };
    out.family('skyhost_vms', 'gauge', 'VMs by state', lines(Object.entries(vmStates).map(([s, n]) => `skyhost_vms{state="${s}"} ${n}`)));
    out.family('skyhost_cluster_memory_mib', 'gauge', 'memory of hosts that answer polls',
      `skyhost_cluster_memory_mib{kind="total"} ${memTotal}\nskyhost_cluster_memory_mib{kind="free"} ${memFree}\n`);
    hostGauges(out, hosts);
    vmGauges(out, hosts, services.vms.all(), this.vmLabels, ++this.renders);
    const mem = process.memoryUsage();
    out.family('process_resident_memory_bytes', 'gauge', 'resident memory of the controller', `process_resident_memory_bytes ${mem.rss}\n`);
    out.family('nodejs_heap_used_bytes', 'gauge', 'V8 heap in use', `nodejs_heap_used_bytes ${mem.heapUsed}\n`);
    out.family('nodejs_heap_total_bytes', 'gauge', 'V8 heap reserved', `nodejs_heap_total_bytes ${mem.heapTotal}\n`);
    out.family('nodejs_external_memory_bytes', 'gauge', 'memory outside the V8 heap (buffers)', `nodejs_external_memory_bytes ${mem.external}\n`);
    out.family('nodejs_array_buffers_bytes', 'gauge', 'ArrayBuffers and Buffers, part of the external memory', `nodejs_array_buffers_bytes ${mem.arrayBuffers}\n`);
    out.family('nodejs_v8_malloced_bytes', 'gauge', 'memory V8 itself has from malloc (compiler zones, tables)', `nodejs_v8_malloced_bytes ${getHeapStatistics().malloced_memory}\n`);
    const spaces = getHeapSpaceStatistics();
    out.family('nodejs_heap_space_size_bytes', 'gauge', 'V8 heap reserved, by space (new_space is the young generation, old_space and large_object_space the old)',
      lines(spaces.map((sp) => `nodejs_heap_space_size_bytes{space="${sp.space_name}"} ${sp.space_size}`)));
    out.family('nodejs_heap_space_used_bytes', 'gauge', 'V8 heap in use, by space', lines(spaces.map((sp) => `nodejs_heap_space_used_bytes{space="${sp.space_name}"} ${sp.space_used_size}`)));
    const text = out.bytes();
    this.lastBytes = text.length;
    return text;
  }
}

/**
 * The exposition text written as it is made into one growing buffer. Measured at 10,000 VMs: a string
 * per line joined at the end (or one string grown with `+=`), then encoded for the socket, took 5-10
 * times as long, most of it copying and collecting the 55,000 intermediate strings.
 */
class Exposition {
  private buf: Buffer;
  private size = 0;

  constructor(expectedBytes: number) {
    this.buf = Buffer.allocUnsafe(expectedBytes);
  }

  /** A family's HELP and TYPE lines, then `samples` (whole lines, each ending in a newline). */
  family(name: string, type: string, help: string, samples = ''): void {
    this.write(`# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`);
    this.write(samples);
  }

  /**
   * One sample line: `labels` is `{…} ` (the braces and the space before the value). Bytes are copied
   * as they are; strings are encoded here (at 10,000 VMs, encoding each VM's labels on every line was
   * half the time of a render).
   */
  sample(name: Buffer, labels: Buffer | string, value: number): void {
    this.copy(name);
    if (typeof labels === 'string') this.write(labels);
    else this.copy(labels);
    const v = String(value);
    this.room(v.length + 1);
    this.size += this.buf.write(v, this.size, 'latin1'); // digits, a dot, an exponent: ASCII
    this.buf[this.size++] = 0x0a;
  }

  copy(bytes: Buffer): void {
    this.room(bytes.length);
    this.buf.set(bytes, this.size);
    this.size += bytes.length;
  }

  write(s: string): void {
    this.room(3 * s.length); // UTF-8 takes at most 3 bytes per UTF-16 unit
    this.size += this.buf.write(s, this.size);
  }

  /** The text so far. */
  bytes(): Buffer {
    return this.buf.subarray(0, this.size);
  }

  private room(bytes: number): void {
    if (this.size + bytes <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.size + bytes));
    this.buf.copy(bigger, 0, 0, this.size);
    this.buf = bigger;
  }
}

/** A few sample lines as a family's samples text. */
function lines(samples: string[]): string {
  return samples.map((l) => l + '\n').join('');
}

const MiB = 1024 * 1024;

/** Whether a host's last poll answer counts: it answered as a member. A host that does not has no usage lines. */
function answers(h: HostRecord): h is HostRecord & { status: HostStatus } {
  return h.status !== null && (h.state === 'ready' || h.state === 'draining');
}

/** Per host (`host` its id, `hostname`): the figures of its last poll answer. */
function hostGauges(out: Exposition, hosts: readonly HostRecord[]): void {
  const labels = hosts.map((h) => `{host="${escape(h.id)}",hostname="${escape(h.hostname)}"} `);
  const each = (name: string, type: string, help: string, value: (h: HostRecord & { status: HostStatus }) => number, all = false) => {
    out.family(name, type, help);
    const bytes = Buffer.from(name);
    hosts.forEach((h, i) => {
      if (answers(h)) out.sample(bytes, labels[i]!, value(h));
      else if (all) out.sample(bytes, labels[i]!, 0);
    });
  };
  each('skyhost_host_up', 'gauge', 'whether the host answered its last poll as a member (1) or not (0)', () => 1, true);
  each('skyhost_host_cpu_ratio', 'gauge', 'CPU busy of the host at its last poll (0..1)', (h) => round(Math.max(0, Math.min(1, h.status.cpu.loadPct / 100))));
  each('skyhost_host_memory_used_bytes', 'gauge', 'memory in use on the host at its last poll', (h) => (h.status.memory.totalMiB - h.status.memory.freeMiB) * MiB);
  each('skyhost_host_memory_total_bytes', 'gauge', 'memory of the host', (h) => h.status.memory.totalMiB * MiB);
  each('skyhost_host_vms_running', 'gauge', 'VMs running on the host at its last poll', (h) => h.status.vms.running);
}

/** A VM's label set, escaped once and kept while its name, host and owner stay the same. */
interface VmLabels {
  name: string;
  hostId: string;
  owner: string;
  /** `{vm="…",name="…",host="…",owner="…"} ` in UTF-8, ready to go between a metric's name and its value. */
  bytes: Buffer;
  /** The render that last saw the VM (label sets of VMs no render sees any more are dropped). */
  seen: number;
}

type VmUsage = NonNullable<HostStatus['vmList'][number]['usage']>;

/**
 * Per VM (`vm` its id, `name`, `host`, `owner`): its size, whether it runs and, when running, its
 * usage from its host's last poll answer. `kept` holds the label sets between renders, `render` counts them.
 */
function vmGauges(out: Exposition, hosts: readonly HostRecord[], records: Iterable<Readonly<VmRecord>>, kept: Map<string, VmLabels>, render: number): void {
  const byId = new Map<string, VmUsage>();
  for (const h of hosts) if (answers(h)) for (const v of h.status.vmList) if (v.usage) byId.set(v.id, v.usage);
  const vms: Array<Readonly<VmRecord>> = [];
  const labels: Buffer[] = [];
  const usage: Array<VmUsage | undefined> = [];
  for (const v of records) {
    let l = kept.get(v.id);
    if (l?.name !== v.name || l.hostId !== v.hostId || l.owner !== v.owner) {
      const text = `{vm="${escape(v.id)}",name="${escape(v.name)}",host="${escape(v.hostId)}",owner="${escape(v.owner)}"} `;
      l = { name: v.name, hostId: v.hostId, owner: v.owner, bytes: Buffer.from(text), seen: render };
      kept.set(v.id, l);
    }
    l.seen = render;
    vms.push(v);
    labels.push(l.bytes);
    usage.push(v.state === 'running' ? byId.get(v.id) : undefined);
  }
  if (kept.size > vms.length) for (const [id, l] of kept) if (l.seen !== render) kept.delete(id);
  const each = (name: string, help: string, value: (v: Readonly<VmRecord>, u: VmUsage | undefined) => number | undefined) => {
    out.family(name, 'gauge', help);
    const bytes = Buffer.from(name);
    for (let i = 0; i < vms.length; i++) {
      const x = value(vms[i]!, usage[i]);
      if (x !== undefined) out.sample(bytes, labels[i]!, x);
    }
  };
  each('skyhost_vm_running', 'whether the VM runs (1) or not (0)', (v) => (v.state === 'running' ? 1 : 0));
  each('skyhost_vm_vcpus', 'virtual CPUs the VM has', (v) => v.vcpus);
  each('skyhost_vm_memory_bytes', 'memory the VM was given', (v) => v.memoryMiB * MiB);
  each('skyhost_vm_cpu_ratio', 'CPU busy of the VM\'s vCPUs at its host\'s last poll (0..1)', (_v, u) => (u?.cpuRatio !== undefined ? round(u.cpuRatio) : undefined));
  each('skyhost_vm_memory_used_bytes', 'memory the VM takes on its host at its host\'s last poll', (_v, u) => (u?.memoryUsedMiB !== undefined ? u.memoryUsedMiB * MiB : undefined));
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function escape(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}
