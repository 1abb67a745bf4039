// `/metrics` (server/metrics.ts): per-host and per-VM gauges, named as Prometheus' conventions say.
import { expect } from 'chai';
import type { HostStatus } from '../../wire/api.ts';
import { Metrics, REUSE_MS } from '../../server/metrics.ts';
import type { ControllerServices } from '../../server/services.ts';

function status(o: { loadPct: number; totalMiB: number; freeMiB: number; vmList?: HostStatus['vmList'] }): HostStatus {
  return {
    hostId: 'x', hostname: 'x', version: 't', cpu: { model: 'cpu', cores: 4, threads: 8, loadPct: o.loadPct, load1: 1 },
    memory: { totalMiB: o.totalMiB, freeMiB: o.freeMiB, usedByVmsMiB: 0 }, disk: { path: '/', totalGiB: 100, freeGiB: 50 }, gpus: [],
    vms: { running: o.vmList?.length ?? 0, total: o.vmList?.length ?? 0, vcpus: 0 }, hypervisor: 'kvm', templates: [], vmList: o.vmList ?? [],
    uptimeS: 1, sampledAt: new Date().toISOString(),
  };
}

const vmInfo = (id: string, usage?: { cpuRatio?: number; memoryUsedMiB?: number }) => ({
  id, name: id, template: 'tiny', vcpus: 2, memoryMiB: 512, state: 'running' as const, console: 'serial' as const, createdAt: '2026-01-01T00:00:00Z',
  ...(usage ? { usage } : {}),
});

type FakeVm = { id: string; name: string; hostId: string; owner: string; state: string; vcpus: number; memoryMiB: number };

function services(o: { vms?: FakeVm[] } = {}): ControllerServices {
  const hosts = [
    { id: 'h1', hostname: 'lab-"pc"-1', state: 'ready', status: status({ loadPct: 37.5, totalMiB: 8192, freeMiB: 2048, vmList: [vmInfo('vm000001', { cpuRatio: 0.25, memoryUsedMiB: 300 })] }) },
    { id: 'h2', hostname: 'lab-pc-2', state: 'down', status: status({ loadPct: 90, totalMiB: 4096, freeMiB: 0 }) },
  ];
  const vms = o.vms ?? [
    { id: 'vm000001', name: 'web-1', hostId: 'h1', owner: 'alice', state: 'running', vcpus: 2, memoryMiB: 512 },
    { id: 'vm000002', name: 'db-1', hostId: 'h2', owner: 'bob', state: 'shutoff', vcpus: 1, memoryMiB: 1024 },
  ];
  return {
    hosts: { records: () => hosts },
    vms: { counts: () => ({ running: 1, shutoff: 1 }), all: () => vms },
    system: { name: 'system', role: 'admin' },
  } as unknown as ControllerServices;
}

/** name -> { type, samples } from the exposition text. */
function parse(text: string): Map<string, { type?: string; help?: string; samples: string[] }> {
  const out = new Map<string, { type?: string; help?: string; samples: string[] }>();
  const get = (n: string) => out.get(n) ?? out.set(n, { samples: [] }).get(n)!;
  for (const line of text.trim().split('\n')) {
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') get(meta[2]!).type = meta[3];
      else get(meta[2]!).help = meta[3];
      continue;
    }
    const name = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line)![1]!;
    const family = [...out.keys()].find((f) => name === f || (name.startsWith(f + '_') && /_(bucket|sum|count)$/.test(name))) ?? name;
    get(family).samples.push(line);
  }
  return out;
}

describe('/metrics', () => {
  const text = new Metrics().render(services()).toString();
  const families = parse(text);

  it('should give each host its CPU as a ratio and its memory in bytes, labelled by host id and hostname', () => {
    expect(text).to.include('skyhost_host_cpu_ratio{host="h1",hostname="lab-\\"pc\\"-1"} 0.375\n');
    expect(text).to.include(`skyhost_host_memory_used_bytes{host="h1",hostname="lab-\\"pc\\"-1"} ${6144 * 1024 * 1024}\n`);
    expect(text).to.include(`skyhost_host_memory_total_bytes{host="h1",hostname="lab-\\"pc\\"-1"} ${8192 * 1024 * 1024}\n`);
    expect(text).to.include('skyhost_host_up{host="h2",hostname="lab-pc-2"} 0\n');
    // a host that does not answer has no usage: its last figures would be stale
    expect(text).not.to.match(/skyhost_host_cpu_ratio\{host="h2"/);
  });

  it('should give each VM its size, whether it runs, and its usage when its host reports one', () => {
    const l = 'vm="vm000001",name="web-1",host="h1",owner="alice"';
    expect(text).to.include(`skyhost_vm_memory_bytes{${l}} ${512 * 1024 * 1024}\n`);
    expect(text).to.include(`skyhost_vm_running{${l}} 1\n`);
    expect(text).to.include(`skyhost_vm_cpu_ratio{${l}} 0.25\n`);
    expect(text).to.include(`skyhost_vm_memory_used_bytes{${l}} ${300 * 1024 * 1024}\n`);
    expect(text).to.include('skyhost_vm_running{vm="vm000002",name="db-1",host="h2",owner="bob"} 0\n');
    expect(text).not.to.match(/skyhost_vm_cpu_ratio\{vm="vm000002"/);
  });

  it('should name every family as Prometheus\' conventions say', () => {
    for (const [name, f] of families) {
      expect(name, name).to.match(/^[a-z_:][a-z0-9_:]*$/);
      expect(f.type, `${name} has a TYPE`).to.be.oneOf(['counter', 'gauge', 'histogram']);
      expect(f.help, `${name} has a HELP`).to.be.a('string').and.not.equal('');
      // _total is for counters, and counters end in it
      expect(name.endsWith('_total'), name).to.equal(f.type === 'counter');
      if (name.startsWith('skyhost_host_') || name.startsWith('skyhost_vm_')) {
        // a unit is a base unit, said as the name's suffix
        expect(name, name).to.match(/_(ratio|bytes|up|running|vcpus)$/);
        expect(name, name).not.to.match(/_(percent|pct|mib|kib|mb)(_|$)/);
      }
      for (const sample of f.samples) expect(sample, sample).to.match(/^[a-z_:][a-z0-9_:]*(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+]+$|^[a-z_:][a-z0-9_:]*\{.*\} [0-9.e+-]+$/);
    }
  });

  it('should write every line of a text far larger than its first buffer', () => {
    const vms = Array.from({ length: 3000 }, (_, i) => ({ id: `vm${String(i).padStart(6, '0')}`, name: `lab-${i}`, hostId: 'h1', owner: 'élève', state: 'shutoff', vcpus: 1, memoryMiB: 256 }));
    const big = new Metrics().render(services({ vms })).toString();
    const running = big.split('\n').filter((l) => l.startsWith('skyhost_vm_running{'));
    expect(running).to.have.length(3000);
    expect(running[2999]).to.equal('skyhost_vm_running{vm="vm002999",name="lab-2999",host="h1",owner="élève"} 0');
    expect(big.endsWith('\n')).to.equal(true);
  });

  it('should label a VM by its name, host and owner as they are now, and drop a VM that is gone', () => {
    const vms: FakeVm[] = [
      { id: 'vm000001', name: 'web-1', hostId: 'h1', owner: 'alice', state: 'running', vcpus: 2, memoryMiB: 512 },
      { id: 'vm000002', name: 'db-1', hostId: 'h2', owner: 'bob', state: 'shutoff', vcpus: 1, memoryMiB: 1024 },
    ];
    const metrics = new Metrics();
    const fake = services({ vms });
    expect(metrics.render(fake).toString()).to.include('skyhost_vm_vcpus{vm="vm000001",name="web-1",host="h1",owner="alice"} 2\n');
    vms[0] = { ...vms[0]!, name: 'web-"one"', owner: 'carol' };
    vms.pop();
    const after = metrics.render(fake).toString();
    expect(after).to.include('skyhost_vm_vcpus{vm="vm000001",name="web-\\"one\\"",host="h1",owner="carol"} 2\n');
    expect(after).not.to.include('owner="alice"');
    expect(after).not.to.include('vm000002');
  });

  it('should send the same text to scrapes within REUSE_MS of it, and a new one after', () => {
    let now = 1000;
    const metrics = new Metrics({ now: () => now });
    const fake = services();
    const first = metrics.scrape(fake);
    now += REUSE_MS - 1;
    expect(metrics.scrape(fake)).to.equal(first);
    now += 1;
    const second = metrics.scrape(fake);
    expect(second).not.to.equal(first);
    expect(second.toString()).to.include('skyhost_vm_running{vm="vm000001"');
    // with no window, every scrape renders
    const always = new Metrics({ reuseMs: 0, now: () => now });
    expect(always.scrape(fake)).not.to.equal(always.scrape(fake));
  });
});
