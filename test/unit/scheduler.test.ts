import { expect } from 'chai';
import {
  place, placeOriginal,
  type HostUsage, type InFlight, type Placement, type PlacementOptions, type PlacementRequest, type Policy, type SchedulerHost,
} from '../../server/scheduler/index.ts';
import { CHECKS, firstFailed, holdings, NOTHING_HELD, NOTHING_KNOWN } from '../../server/scheduler/feasibility.ts';

// Factories: a host and a request with sensible defaults; each test overrides only what it is about.
type HostOpts = Partial<Omit<SchedulerHost, 'status'>> & {
  memMiB?: number; freeMiB?: number; threads?: number; vcpus?: number; vms?: number;
  diskFreeGiB?: number; hypervisor?: HostUsage['hypervisor']; templates?: string[]; polled?: boolean;
};
function host(o: HostOpts = {}): SchedulerHost {
  const memMiB = o.memMiB ?? 16384;
  return {
    id: o.id ?? 'h1',
    state: o.state ?? 'ready',
    status: o.polled === false ? null : {
      cpu: { threads: o.threads ?? 8 },
      memory: { totalMiB: memMiB, freeMiB: o.freeMiB ?? memMiB - 512 },
      disk: { totalGiB: 200, freeGiB: o.diskFreeGiB ?? 150 },
      vms: { total: o.vms ?? 0, vcpus: o.vcpus ?? 0 },
      hypervisor: o.hypervisor ?? 'kvm',
      templates: (o.templates ?? ['alpine', 'desktop']).map((name) => ({ name })),
    },
  };
}
const alpine = (o: Partial<PlacementRequest> = {}): PlacementRequest =>
  ({ template: 'alpine', vcpus: 1, memoryMiB: 256, diskGiB: 2, needsKvm: false, minMemoryMiB: 128, ...o });
const desktop = (o: Partial<PlacementRequest> = {}): PlacementRequest =>
  ({ template: 'desktop', vcpus: 2, memoryMiB: 2048, diskGiB: 10, needsKvm: true, minMemoryMiB: 2048, ...o });

/** The original demo: two strong hosts and one weak one (2 GB, TCG). */
const demo = (): SchedulerHost[] => [
  host({ id: 'strong-1', memMiB: 16384 }),
  host({ id: 'strong-2', memMiB: 16384 }),
  host({ id: 'weak', memMiB: 2048, threads: 2, hypervisor: 'tcg' }),
];

/** Places `n` requests one after another, each counting the earlier ones as in flight. */
function burst(n: number, hosts: SchedulerHost[], req: (i: number) => PlacementRequest, options?: PlacementOptions): Record<string, number> {
  const inFlight: InFlight[] = [];
  const perHost: Record<string, number> = Object.fromEntries(hosts.map((h) => [h.id, 0]));
  for (let i = 0; i < n; i++) {
    const r = req(i);
    const p = place(r, hosts, inFlight, options);
    if (!p.ok) throw new Error(p.explanation);
    perHost[p.host]! += 1;
    inFlight.push({ hostId: p.host, vcpus: r.vcpus, memoryMiB: r.memoryMiB, diskGiB: r.diskGiB });
  }
  return perHost;
}

function expectEveryLeftOutHasReason(p: Placement, hosts: SchedulerHost[]): void {
  const chosen = p.ok ? 1 : 0;
  const feasibleCount = hosts.length - p.rejected.length;
  expect(feasibleCount).to.be.at.least(chosen);
  for (const r of p.rejected) {
    expect(hosts.map((h) => h.id)).to.include(r.host);
    expect(r.reason).to.be.a('string').and.not.empty;
    expect(r.message).to.be.a('string').and.not.empty;
  }
  if (p.ok) expect(p.rejected.map((r) => r.host)).not.to.include(p.host);
}

describe('scheduler', () => {
  describe('given the original demo (two strong hosts, one weak 2 GB host)', () => {
    it('should never place a desktop VM on the weak host', () => {
      for (let i = 0; i < 50; i++) {
        const p = place(desktop({ key: `vm${i}` }), demo());
        expect(p.ok).to.equal(true);
        expect(p.host).to.match(/^strong-/);
        const weak = p.rejected.find((r) => r.host === 'weak');
        expect(weak?.reason).to.equal('no_kvm');
      }
    });

    it('should still keep a desktop off the weak host when it runs KVM, for lack of memory', () => {
      const hosts = demo();
      hosts[2] = host({ id: 'weak', memMiB: 2048, threads: 2, hypervisor: 'kvm' });
      const p = place(desktop(), hosts);
      expect(p.host).to.match(/^strong-/);
      expect(p.rejected).to.deep.include({ host: 'weak', reason: 'memory', message: 'needs 2048 MiB + 256 MiB reserve, 1536 MiB free' });
    });

    it('should let an Alpine VM land on the weak host when the strong ones are busy', () => {
      const hosts = demo();
      hosts[0] = host({ id: 'strong-1', memMiB: 16384, freeMiB: 1024, vcpus: 20, vms: 8 });
      hosts[1] = host({ id: 'strong-2', memMiB: 16384, freeMiB: 1024, vcpus: 20, vms: 8 });
      const p = place(alpine(), hosts);
      expect(p).to.include({ ok: true, host: 'weak' });
      expect(p.rejected).to.deep.equal([]);
    });
  });

  describe('given a burst on equal hosts', () => {
    const equal = (): SchedulerHost[] => [host({ id: 'a' }), host({ id: 'b' }), host({ id: 'c' })];

    it('should land 12 small requests 4/4/4 because in-flight placements count at once', () => {
      expect(burst(12, equal(), (i) => alpine({ key: `r${i}` }))).to.deep.equal({ a: 4, b: 4, c: 4 });
    });

    it('should land 30 requests 10/10/10 under spread as well', () => {
      expect(burst(30, equal(), (i) => alpine({ key: `r${i}` }), { policy: 'spread' })).to.deep.equal({ a: 10, b: 10, c: 10 });
    });

    it('should fill one host first under binpack', () => {
      const counts = burst(12, equal(), (i) => alpine({ key: `r${i}` }), { policy: 'binpack' });
      expect(Math.max(...Object.values(counts))).to.equal(12);
    });

    it('should show the original placement sending the whole burst to one host (the baseline)', () => {
      const hosts = equal();
      const picks = Array.from({ length: 12 }, () => placeOriginal(hosts));
      expect(new Set(picks).size).to.equal(1);
    });
  });

  describe('feasibility', () => {
    // Table: one host that fails exactly one check, and the reason it must be given.
    const cases: Array<[string, SchedulerHost, PlacementRequest, string, InFlight[]?]> = [
      ['a pending host', host({ state: 'pending' }), alpine(), 'not_ready'],
      ['a down host', host({ state: 'down' }), alpine(), 'not_ready'],
      ['a draining host', host({ state: 'draining' }), alpine(), 'not_ready'],
      ['a host never polled', host({ polled: false }), alpine(), 'not_polled'],
      ['a TCG host for a KVM template', host({ hypervisor: 'tcg' }), desktop(), 'no_kvm'],
      ['a host where QEMU does not run, for a KVM template', host({ hypervisor: 'none' }), desktop(), 'no_hypervisor'],
      ['a host where QEMU does not run, for a light template', host({ hypervisor: 'none' }), alpine(), 'no_hypervisor'],
      ['a host without the template', host({ templates: ['debian'] }), alpine(), 'missing_template'],
      ['a host short of memory with the reserve', host({ freeMiB: 256 + 255 }), alpine(), 'memory'],
      ['a host whose memory is taken in flight', host({ freeMiB: 4096 }), alpine(), 'memory',
        [{ hostId: 'h1', vcpus: 1, memoryMiB: 3800, diskGiB: 1 }]],
      ['the template minimum raising the request', host({ freeMiB: 1024 }), alpine({ memoryMiB: 64, minMemoryMiB: 1024 }), 'memory'],
      ['vCPUs beyond the overcommit', host({ threads: 2, vcpus: 8 }), alpine(), 'vcpu'],
      ['vCPUs held in flight', host({ threads: 1, vcpus: 2 }), alpine(), 'vcpu',
        [{ hostId: 'h1', vcpus: 2, memoryMiB: 1, diskGiB: 0 }]],
      ['a full disk', host({ diskFreeGiB: 1.5 }), alpine(), 'disk'],
      ['any host, for a disk smaller than the template', host(), alpine({ diskGiB: 2, templateDiskGiB: 2.5 }), 'disk_below_template'],
      ['a host lacking a template it has no disk room to pull', host({ templates: ['debian'], diskFreeGiB: 3.5 }), alpine({ templateBytes: 2 * 1024 ** 3 }), 'no_room_for_template'],
    ];
    for (const [what, h, req, reason, inFlight] of cases) {
      it(`should leave out ${what} as "${reason}"`, () => {
        const p = place(req, [h], inFlight ?? []);
        expect(p.ok).to.equal(false);
        expect(p.host).to.equal(null);
        expect(p.rejected).to.have.length(1);
        expect(p.rejected[0]).to.include({ host: 'h1', reason });
        expect(p.explanation).to.contain(reason);
      });
    }

    it('should take a host lacking the template when it can be pulled there, the holder first when they are equal', () => {
      const lacking = host({ id: 'lacking', templates: ['debian'] });
      const alone = place(alpine({ templateBytes: 2 * 1024 ** 3 }), [lacking]);
      expect(alone).to.deep.include({ ok: true, host: 'lacking', pull: true });
      expect(alone.explanation).to.contain('pulls template "alpine" first');
      // Equal load: the host that has the template wins, whatever the tie-break.
      for (let i = 0; i < 20; i++) {
        const p = place(alpine({ key: `vm-${i}`, templateBytes: 2 * 1024 ** 3 }), [lacking, host({ id: 'holder' })]);
        expect(p).to.deep.include({ ok: true, host: 'holder', pull: false });
      }
      // A nearly full holder loses to an idle host that pulls: a pull costs minutes, a full host every VM on it.
      const full = host({ id: 'holder', freeMiB: 1024, vcpus: 28 });
      expect(place(alpine({ templateBytes: 2 * 1024 ** 3 }), [lacking, full])).to.deep.include({ host: 'lacking', pull: true });
      // Without a source to pull from, only the holder qualifies, and the lacking host is told why.
      const none = place(alpine(), [lacking]);
      expect(none.rejected[0]).to.deep.include({ reason: 'missing_template', message: 'no template "alpine" on this host, and no host or catalog to pull it from' });
      // Room counts the VM's own disk and the placements in flight: 2 GiB disk + 2 GiB template.
      expect(place(alpine({ templateBytes: 2 * 1024 ** 3 }), [host({ templates: [], diskFreeGiB: 4 })]).ok).to.equal(true);
      const held = place(alpine({ templateBytes: 2 * 1024 ** 3 }), [host({ templates: [], diskFreeGiB: 4 })], [{ hostId: 'h1', vcpus: 1, memoryMiB: 1, diskGiB: 0.5 }]);
      expect(held.rejected[0]).to.deep.include({ reason: 'no_room_for_template', message: 'would pull template "alpine" (2.0 GiB) besides the 2 GiB disk, 3.5 GiB free' });
    });

    it('should have a case above for every check, each run by firstFailed() in the order of CHECKS', () => {
      const tableReasons = new Set(cases.map((c) => c[3]));
      for (const check of CHECKS) expect(tableReasons, check.reason).to.include(check.reason);
      // firstFailed() is written out by position: it must agree with a plain run of the list.
      const need = { template: 'alpine', vcpus: 1, memoryMiB: 256, diskGiB: 2, needsKvm: true, minMemoryMiB: 128, reserveMiB: 256, overcommit: 4, pullGiB: 2 };
      for (const [, h, , , inFlight] of cases) {
        const held = holdings(inFlight ?? []).get(h.id) ?? NOTHING_HELD;
        const status = h.status ?? NOTHING_KNOWN;
        const plain = CHECKS.find((c) => !c.test(need, status, held, h));
        expect(firstFailed(need, status, held, h)).to.equal(plain);
      }
    });

    it('should check the rules that read only the request once, leaving out every host for them', () => {
      const hosts = [host({ id: 'a' }), host({ id: 'b', state: 'down' })];
      const p = place(alpine({ diskGiB: 1, templateDiskGiB: 2.5 }), hosts);
      expect(p).to.deep.equal({
        ok: false, host: null,
        explanation: 'no host fits 1 vCPU / 256 MiB / 1 GiB of "alpine": 2 disk_below_template',
        rejected: ['a', 'b'].map((id) => ({ host: id, reason: 'disk_below_template', message: 'template "alpine" needs a disk of at least 3 GiB' })),
      });
    });

    it('should describe the hosts left out as they were at the decision, not when read', () => {
      const hosts = [host({ id: 'full', freeMiB: 300 }), host({ id: 'roomy' })];
      const p = place(alpine(), hosts);
      const before = JSON.stringify(p.rejected);
      hosts[0]!.status!.memory.freeMiB = 100_000;
      hosts[0]!.state = 'down';
      expect(JSON.stringify(p.rejected)).to.equal(before);
      expect(p.rejected).to.deep.equal([{ host: 'full', reason: 'memory', message: 'needs 256 MiB + 256 MiB reserve, 300 MiB free' }]);
    });

    it('should say in each room sentence what was needed and what the host has', () => {
      const short = (h: SchedulerHost) => place(alpine(), [h]).rejected[0]?.message;
      expect(short(host({ freeMiB: 400 }))).to.equal('needs 256 MiB + 256 MiB reserve, 400 MiB free');
      expect(short(host({ threads: 2, vcpus: 8 }))).to.equal('9 vCPUs would exceed 8 (4 per hardware thread)');
      expect(short(host({ diskFreeGiB: 1.25 }))).to.equal('needs 2 GiB disk, 1.2 GiB free');
    });

    it('should accept a host exactly at the memory, vCPU and disk limits', () => {
      const h = host({ freeMiB: 256 + 256, threads: 1, vcpus: 3, diskFreeGiB: 2 });
      expect(place(alpine(), [h]).ok).to.equal(true);
      expect(place(alpine({ memoryMiB: 257 }), [h]).ok).to.equal(false);
    });

    it('should honour the reserve and overcommit options', () => {
      const h = host({ freeMiB: 1024, threads: 1, vcpus: 1 });
      expect(place(alpine(), [h], [], { memoryReserveMiB: 900 }).rejected[0]?.reason).to.equal('memory');
      expect(place(alpine(), [h], [], { vcpuOvercommit: 1 }).rejected[0]?.reason).to.equal('vcpu');
      expect(place(alpine(), [h], [], { memoryReserveMiB: 0, vcpuOvercommit: 2 }).ok).to.equal(true);
    });

    it('should name the hosts left out also when a host was chosen, and serialize them to JSON', () => {
      const p = place(desktop(), demo());
      expect(p.ok).to.equal(true);
      const json = JSON.parse(JSON.stringify(p));
      expect(json.rejected).to.deep.equal([{ host: 'weak', reason: 'no_kvm', message: 'template "desktop" needs hardware acceleration (KVM), the host runs QEMU in software (TCG)' }]);
      expect(place(desktop(), demo(), [], { policy: 'spread' }).rejected[0]!.message).to.equal(json.rejected[0].message, 'the same sentence in the next decision');
    });

    it('should sum up the reasons when no host fits', () => {
      const hosts = [host({ id: 'a', state: 'pending' }), host({ id: 'b', hypervisor: 'tcg' }), host({ id: 'c', freeMiB: 1000 }), host({ id: 'd', freeMiB: 1500 })];
      const p = place(desktop(), hosts);
      expect(p.ok).to.equal(false);
      expect(p.explanation).to.equal('no host fits 2 vCPU / 2048 MiB / 10 GiB of "desktop": 1 not_ready, 1 no_kvm, 2 memory');
      expect(p.rejected.map((r) => r.host)).to.deep.equal(['a', 'b', 'c', 'd']);
    });

    it('should answer "no host fits" for an empty cluster, without throwing', () => {
      const p = place(alpine(), []);
      expect(p).to.deep.equal({ ok: false, host: null, explanation: 'no host fits: the cluster has no hosts yet', rejected: [] });
    });

    it('should give every left-out host a reason in a mixed cluster', () => {
      const hosts = [
        ...demo(),
        host({ id: 'p', state: 'pending' }), host({ id: 'n', polled: false }), host({ id: 't', templates: [] }),
        host({ id: 'full', freeMiB: 100 }), host({ id: 'cpu', threads: 1, vcpus: 4 }), host({ id: 'disk', diskFreeGiB: 0 }),
      ];
      for (const req of [alpine(), desktop()]) {
        const p = place(req, hosts);
        expectEveryLeftOutHasReason(p, hosts);
        expect(p.rejected.map((r) => r.host)).to.include.members(['p', 'n', 't', 'full', 'cpu', 'disk']);
      }
    });
  });

  describe('scores', () => {
    const policies: Policy[] = ['least-loaded', 'spread', 'binpack'];
    for (const policy of policies) {
      it(`should stay within 0..100 under ${policy}, from an idle host to an exact fit`, () => {
        const hosts = [
          host({ id: 'idle', memMiB: 262144, freeMiB: 262144, threads: 256 }),
          host({ id: 'exact', memMiB: 1024, freeMiB: 512, threads: 1, vcpus: 3 }),
          host({ id: 'odd', memMiB: 1024, freeMiB: 4096 }), // an agent reporting more free than total
          host({ id: 'busy', vms: 500, vcpus: 10 }),
        ];
        for (const h of hosts) {
          const p = place(alpine(), [h], [], { policy });
          expect(p.ok, h.id).to.equal(true);
          if (p.ok) expect(p.score, h.id).to.be.within(0, 100);
        }
      });
    }

    it('should score by the documented formulas (least-loaded = 100 - binpack)', () => {
      const h = host({ memMiB: 1024, freeMiB: 256 + 256, threads: 1, vcpus: 3 });
      const req = alpine();
      const ll = place(req, [h], [], { memoryReserveMiB: 256 });
      const bp = place(req, [h], [], { policy: 'binpack' });
      expect(ll.ok && ll.score).to.be.closeTo(100 * (1 - (0.7 * (1024 - 256) / 1024 + 0.3)), 1e-9);
      expect(bp.ok && bp.score).to.be.closeTo(100 * (0.7 * (1024 - 256) / 1024 + 0.3), 1e-9);
    });

    it('should prefer the emptier host under least-loaded and the fuller under binpack', () => {
      const hosts = [host({ id: 'empty' }), host({ id: 'half', freeMiB: 8192, vcpus: 16, vms: 4 })];
      expect(place(alpine(), hosts).host).to.equal('empty');
      expect(place(alpine(), hosts, [], { policy: 'binpack' }).host).to.equal('half');
      expect(place(alpine(), hosts, [], { policy: 'spread' }).host).to.equal('empty');
    });

    it('should explain the choice in one sentence naming the policy, host and score', () => {
      const p = place(alpine(), demo(), [{ hostId: 'strong-1', vcpus: 1, memoryMiB: 256, diskGiB: 1 }]);
      expect(p.ok).to.equal(true);
      if (!p.ok) return;
      expect(p.explanation).to.match(new RegExp(`^least-loaded: ${p.host} scores \\d+\\.\\d/100 \\(memory \\d+% and vCPU \\d+%`));
    });

    it('should refuse an unknown policy as a programming error', () => {
      expect(() => place(alpine(), demo(), [], { policy: 'random' as Policy })).to.throw(TypeError, /random/);
    });
  });

  describe('ties', () => {
    const equal = (n: number): SchedulerHost[] => Array.from({ length: n }, (_, i) => host({ id: `host-${i}` }));

    it('should pick the same host for the same request and seed, whatever the host order', () => {
      const hosts = equal(10);
      const first = place(alpine({ key: 'vm-42' }), hosts, [], { seed: 7 });
      const again = place(alpine({ key: 'vm-42' }), [...hosts].reverse(), [], { seed: 7 });
      expect(again.host).to.equal(first.host);
    });

    it('should spread different requests over equal hosts rather than always the first', () => {
      const hosts = equal(10);
      const picks = new Set(Array.from({ length: 100 }, (_, i) => place(alpine({ key: `vm-${i}` }), hosts).host));
      expect(picks.size).to.be.at.least(7);
    });
  });
});
