import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { completeFigures, pendingGroup, type Group } from '../../bench/group.ts';
import { parseWrk } from '../../bench/wrk.ts';
import { figure, formatMarkdown, formatTable, fromJson, median, notMeasured, quantile, round, summarize, toJson, withTarget, writeJson, type Figure } from '../../bench/stats.ts';

describe('bench statistics', () => {
  it('should take the median of odd and even sample counts, whatever their order', () => {
    expect(median([3, 1, 2])).to.equal(2);
    expect(median([4, 1, 3, 2])).to.equal(2.5);
    expect(median([7])).to.equal(7);
    expect(median([])).to.be.NaN;
  });

  it('should interpolate quantiles linearly and clamp q to 0..1', () => {
    const xs = [10, 20, 30, 40, 50];
    expect(quantile(xs, 0)).to.equal(10);
    expect(quantile(xs, 1)).to.equal(50);
    expect(quantile(xs, 0.25)).to.equal(20);
    expect(quantile(xs, 0.1)).to.be.closeTo(14, 1e-9);
    expect(quantile(xs, -1)).to.equal(10);
    expect(quantile(xs, 2)).to.equal(50);
  });

  it('should summarize runs as median and interquartile range, and refuse no runs', () => {
    expect(summarize([5, 1, 4, 2, 3])).to.deep.equal({ median: 3, spread: 2, runs: 5 });
    expect(summarize([9, 9, 9])).to.deep.equal({ median: 9, spread: 0, runs: 3 });
    expect(() => summarize([])).to.throw(RangeError);
  });

  it('should not let one outlier move the median', () => {
    expect(summarize([10, 11, 10, 12, 5000]).median).to.equal(11);
  });

  it('should round to three significant digits and keep large numbers whole', () => {
    expect(round(123456.7)).to.equal(123457);
    expect(round(12.345)).to.equal(12.3);
    expect(round(0.012345)).to.equal(0.0123);
    expect(round(0)).to.equal(0);
    expect(round(-1.2345)).to.equal(-1.23);
  });

  it('should build a figure with its baseline measured from its own samples', () => {
    const f = figure('clone.overlay_ms', 'ms', [20, 22, 21], { baseline: [1500, 1400, 1600], note: 'n' });
    expect(f).to.deep.equal({ id: 'clone.overlay_ms', value: 21, unit: 'ms', spread: 1, runs: 3, baseline: 1500, note: 'n' });
  });
});

describe('bench registry', () => {
  // docs/design.md#benchmarks (contract): every one of these ids is reported, a number or null with the reason.
  const CONTRACT_IDS = [
    'binary.size_mb', 'binary.startup_ms', 'clone.overlay_ms', 'clone.full_copy_ms',
    'scheduler.decisions_per_s_1000_hosts', 'scheduler.burst_max_minus_min', 'scheduler.fill_pct', 'scheduler.fill_pct_seed_baseline',
    'controller.dashboard_p99_ms', 'controller.api_vms_p99_ms', 'controller.rss_mb', 'controller.create_rate',
    'controller.dashboard_p99_ms_1000', 'controller.api_vms_p99_ms_1000', 'controller.rss_mb_1000', 'controller.create_rate_1000',
    'agent.status_p50_ms', 'agent.idle_rss_mb', 'agent.idle_cpu_pct',
    'vm.request_to_running_ms', 'vm.request_to_console_ms', 'vm.overhead_ms',
    'discovery.enroll_ms', 'iso.remaster_s', 'iso.copy_s',
  ];

  it('should list every contract id in a group named by the id\'s first part, each group once', async () => {
    const { GROUPS } = await import('../../bench/groups.ts');
    const names = GROUPS.map((g) => g.name);
    expect(new Set(names).size).to.equal(names.length);
    for (const id of CONTRACT_IDS) {
      const group = GROUPS.find((g) => g.name === id.split('.')[0]);
      expect(group, id).to.exist;
      expect(group!.ids.map(([i]) => i), id).to.include(id);
    }
    for (const g of GROUPS) for (const [id] of g.ids) expect(id.startsWith(`${g.name}.`), id).to.equal(true);
  });
});

describe('bench: the controller group\'s sizes', () => {
  it('should report the same figures at 200 and at 1,000 hosts, the 1,000-host ids with _1000, the one-size extras once', async () => {
    const { controllerGroup, SIZES, sizeIds } = await import('../../bench/controller.ts');
    expect(SIZES.map((s) => s.hosts)).to.deep.equal([200, 1000]);
    const base = ['controller.dashboard_p99_ms', 'controller.api_vms_p99_ms', 'controller.api_vms_p99_gzip_ms', 'controller.rss_mb', 'controller.create_rate'];
    for (const size of SIZES) {
      const ids = sizeIds(size).map(([id]) => id);
      for (const id of base) expect(ids, `${size.hosts} hosts`).to.include(id + size.suffix);
    }
    const all = controllerGroup.ids.map(([id]) => id);
    expect(new Set(all).size).to.equal(all.length);
    expect(all.filter((id) => id === 'controller.class_burst_30_ms')).to.have.length(1);
  });

  it('should keep the targets of docs/design.md#benchmarks at each size', async () => {
    const { SIZES } = await import('../../bench/controller.ts');
    expect(SIZES.map((s) => [s.hosts, s.targets])).to.deep.equal([
      [200, { dashboardMs: 50, apiVmsMs: 50, rssMb: 150 }],
      [1000, { dashboardMs: 50, apiVmsMs: 100, rssMb: 250 }],
    ]);
  });
});

describe('bench targets', () => {
  const f = (value: number | null): Figure => ({ id: 'x.y', value, unit: 'ms', note: 'n' });
  it('should say a target is met or missed, and by how much', () => {
    expect(withTarget(f(40), { below: 50 }).note).to.equal('n; target < 50 ms met');
    expect(withTarget(f(50), { below: 50 }).note).to.equal('n; target < 50 ms MISSED by 1.0x');
    expect(withTarget(f(125), { below: 50 }).note).to.equal('n; target < 50 ms MISSED by 2.5x');
    expect(withTarget(f(20_000), { atLeast: 20_000 }).note).to.equal('n; target >= 20000 ms met');
    expect(withTarget(f(10_000), { atLeast: 20_000 }).note).to.equal('n; target >= 20000 ms MISSED by 2.0x');
  });
  it('should leave a figure that was not measured as it is', () => {
    expect(withTarget(f(null), { below: 50 })).to.deep.equal(f(null));
  });
});

describe('bench output', () => {
  const figures: Figure[] = [
    { id: 'scheduler.fill_pct', value: 91, unit: '%', baseline: 36.3, spread: 3.1, runs: 21, note: 'mixed' },
    notMeasured('vm.request_to_running_ms', 'ms', 'not measured yet: needs the agent'),
  ];

  it('should write the bench JSON keyed by id, null values with their reason', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bench-test-'));
    try {
      const file = path.join(dir, 'nested', 'out.json');
      writeJson(file, figures);
      const json = JSON.parse(readFileSync(file, 'utf8'));
      expect(json).to.deep.equal({
        'scheduler.fill_pct': { value: 91, unit: '%', baseline: 36.3, spread: 3.1, runs: 21, note: 'mixed' },
        'vm.request_to_running_ms': { value: null, unit: 'ms', note: 'not measured yet: needs the agent' },
      });
      expect(json).to.deep.equal(toJson(figures));
      expect(fromJson(json)).to.deep.equal(figures);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('should print one aligned row per figure under a header', () => {
    const lines = formatTable(figures).split('\n');
    expect(lines[0]).to.match(/^id\s+value\s+unit\s+baseline\s+spread\s+note$/);
    expect(lines).to.have.length(4);
    expect(lines[2]).to.match(/^scheduler\.fill_pct\s+91\s+%\s+36\.3\s+3\.1\s+mixed$/);
    expect(lines[3]).to.match(/^vm\.request_to_running_ms\s+null\s+ms\s+not measured yet/);
    expect(lines[2]!.indexOf('91')).to.equal(lines[3]!.indexOf('null'));
  });

  it('should print the same table in Markdown, escaping pipes in notes', () => {
    const md = formatMarkdown([...figures, { id: 'x.y', value: 1, unit: 'ms', note: 'a | b' }]).split('\n');
    expect(md[0]).to.equal('| id | value | unit | baseline | spread | note |');
    expect(md[2]).to.equal('| `scheduler.fill_pct` | 91 | % | 36.3 | 3.1 | mixed |');
    expect(md[3]).to.equal('| `vm.request_to_running_ms` | **null** | ms |  |  | not measured yet: needs the agent |');
    expect(md[4]).to.equal('| `x.y` | 1 | ms |  |  | a \\| b |');
  });

  it('should report every id of a pending group as null with the reason', async () => {
    const g = pendingGroup('iso', [['iso.remaster_s', 's'], ['iso.copy_s', 's']], 'needs the bootstrapper');
    const out = await g.run({ root: '/', cacheDir: '/tmp', say: () => undefined });
    expect(out).to.deep.equal([
      { id: 'iso.remaster_s', value: null, unit: 's', note: 'needs the bootstrapper' },
      { id: 'iso.copy_s', value: null, unit: 's', note: 'needs the bootstrapper' },
    ]);
  });

  it('should fill the ids a group did not produce, keeping the listed order and any extras', () => {
    const g: Group = { name: 'x', ids: [['x.a', 'ms'], ['x.b', 'ms']], run: async () => [] };
    const done = completeFigures(g, [{ id: 'x.b', value: 2, unit: 'ms' }, { id: 'x.c', value: 3, unit: 'ms' }], 'failed: boom');
    expect(done.map((f) => [f.id, f.value, f.note])).to.deep.equal([['x.a', null, 'failed: boom'], ['x.b', 2, undefined], ['x.c', 3, undefined]]);
  });
});

describe('bench: reading wrk', () => {
  // Printed by wrk 4.1.0 (Debian 12) with --latency, against a server answering 404.
  const report = [
    'Running 1s test @ http://127.0.0.1:18777/nothing',
    '  1 threads and 5 connections',
    '  Thread Stats   Avg      Stdev     Max   +/- Stdev',
    '    Latency     2.17ms    0.90ms  15.95ms   94.15%',
    '    Req/Sec     2.31k    84.87     2.36k    90.91%',
    '  Latency Distribution',
    '     50%  850.00us',
    '     75%    2.35ms',
    '     90%    2.71ms',
    '     99%    1.20s',
    '  2521 requests in 1.10s, 1.25MB read',
    '  Socket errors: connect 0, read 2, write 1, timeout 4',
    '  Non-2xx or 3xx responses: 2521',
    'Requests/sec:   2292.34',
    'Transfer/sec:      1.14MB',
  ].join('\n');

  it('should read the percentiles in ms whatever unit wrk chose, the rate and the failures', () => {
    const r = parseWrk(report);
    expect(r.latencyMs).to.deep.equal({ 50: 0.85, 75: 2.35, 90: 2.71, 99: 1200 });
    expect(r.requestsPerSecond).to.equal(2292.34);
    expect(r.non2xx).to.equal(2521);
    expect(r.errors).to.equal(7);
  });

  it('should count no failures when wrk reports none, and refuse text without a p99', () => {
    const clean = report.split('\n').filter((l) => !/Socket errors|Non-2xx/.test(l)).join('\n');
    expect(parseWrk(clean)).to.include({ non2xx: 0, errors: 0 });
    expect(() => parseWrk('unable to connect to 127.0.0.1:1 Connection refused')).to.throw(/not a wrk --latency report: unable to connect/);
  });
});
