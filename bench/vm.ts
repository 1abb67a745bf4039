// Group `vm`: the real path. A VM requested through the controller (`POST /api/vms`) and created by the
// real agent on this machine's libvirt (TCG), both in their own processes. The guest is the test guest
// (a Debian kernel and a busybox initramfs, test/support/guest.ts). SkyHost's own overhead is the
// request-to-running time minus the time spent inside libvirt and QEMU (qemu-img for the disk,
// virsh net-update for the DHCP entry, virsh define, virsh start), which the agent measures per step
// and logs with "created VM".
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { buildTestGuest, GUEST_PROMPT } from '../test/support/guest.ts';
import type { BenchContext, Group } from './group.ts';
import { requestToSshFigures } from './template.ts';
import { waitUntil, withRealAgent, type RealAgent } from './processes.ts';
import { figure, msSince, notMeasured, withTarget, type Figure } from './stats.ts';

const RUNS = 5;
const TEMPLATE = 'bench-guest';

interface CreateLog {
  ms: number;
  steps: Record<string, number>;
}

/**
 * Runs `use` with a controller process and a real agent on this machine's libvirt (TCG), the test guest
 * imported as template `o.template` (processes.ts `withRealAgent`).
 */
export async function withTestGuestAgent<T>(ctx: BenchContext, o: { hostIdPrefix: string; template: string; logLevel?: string }, use: (r: RealAgent) => Promise<T>): Promise<T> {
  const guest = await buildTestGuest();
  const template = { name: o.template, kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox' };
  return withRealAgent(ctx, { hostIdPrefix: o.hostIdPrefix, template, ...(o.logLevel ? { logLevel: o.logLevel } : {}) }, use);
}

/** Resolves when the console WebSocket at `url` has shown `text`; the scrollback covers a late join. */
export function consoleShows(url: string, token: string, text: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
    let seen = '';
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`console did not show ${JSON.stringify(text)} within ${ms / 1000} s (saw ${JSON.stringify(seen.slice(-200))})`));
    }, ms);
    ws.on('message', (d: Buffer) => {
      seen = (seen + d.toString('utf8')).slice(-4096);
      if (seen.includes(text)) {
        clearTimeout(timer);
        ws.close();
        resolve();
      }
    });
    ws.on('open', () => ws.send('\r'));
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Time inside libvirt/QEMU of one create, from the agent's step timings (disk and DHCP run side by side). */
function insideLibvirt(c: CreateLog): number {
  const s = c.steps;
  return Math.max(s.disk ?? 0, s.dhcp ?? 0) + (s.define ?? 0) + (s.start ?? 0);
}

/** The Debian guest's SSH figure; its failure (e.g. a login that takes minutes on a loaded machine) leaves the tiny guest's figures standing. */
async function sshFigures(ctx: BenchContext): Promise<Figure[]> {
  try {
    return await requestToSshFigures(ctx);
  } catch (err) {
    const why = `failed: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
    ctx.say(`vm: request_to_ssh ${why}`);
    return [notMeasured('vm.request_to_ssh_ms', 'ms', why)];
  }
}

export const vmGroup: Group = {
  name: 'vm',
  ids: [
    ['vm.request_to_running_ms', 'ms'],
    ['vm.request_to_console_ms', 'ms'],
    ['vm.overhead_ms', 'ms'],
    ['vm.request_to_ssh_ms', 'ms'],
  ],
  async run(ctx) {
    return withTestGuestAgent(ctx, { hostIdPrefix: 'bench-vm', template: TEMPLATE, logLevel: 'info' }, async ({ controller, agent }) => {
      const { url, token } = controller;
      const auth = { authorization: `Bearer ${token}` };
      const api = async (method: string, p: string, body?: unknown) => {
        const res = await fetch(url + p, {
          method, headers: { ...auth, ...(body ? { 'content-type': 'application/json' } : {}) },
          ...(body ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(60_000),
        });
        const text = await res.text();
        return { status: res.status, body: text ? JSON.parse(text) as Record<string, unknown> : {} };
      };

      const creates = new Map<string, CreateLog>();
      agent.onLine((line) => {
        if (!line.includes('created VM')) return;
        try {
          const r = JSON.parse(line) as { vm?: string; ms?: number; steps?: Record<string, number> };
          if (r.vm && r.steps) creates.set(r.vm, { ms: r.ms ?? 0, steps: r.steps });
        } catch {
          // not a JSON log line
        }
      });

      const running: number[] = [];
      const consoleMs: number[] = [];
      const overhead: number[] = [];
      const inside: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const t0 = process.hrtime.bigint();
        const created = await api('POST', '/api/vms', { name: `bench-vm-${i}`, template: TEMPLATE, memoryMiB: 128 });
        if (created.status !== 201 && created.status !== 202) throw new Error(`POST /api/vms answered ${created.status}: ${JSON.stringify(created.body)}`);
        const id = String(created.body.id);
        let state = String(created.body.state);
        while (state !== 'running') {
          if (state === 'error') throw new Error(`VM ${id} failed: ${String((await api('GET', `/api/vms/${id}`)).body.error ?? '')}`);
          if (msSince(t0) > 120_000) throw new Error(`VM ${id} not running after 120 s (state ${state})`);
          await new Promise((r) => setTimeout(r, 25));
          state = String((await api('GET', `/api/vms/${id}`)).body.state);
        }
        running.push(msSince(t0));
        await consoleShows(`${url.replace(/^http/, 'ws')}/api/vms/${id}/console`, token, GUEST_PROMPT, 120_000);
        consoleMs.push(msSince(t0));
        await waitUntil(`the agent's timings of VM ${id}`, 10_000, async () => creates.has(id), 50);
        const c = creates.get(id)!;
        inside.push(insideLibvirt(c));
        overhead.push(running.at(-1)! - insideLibvirt(c));
        ctx.say(`vm run ${i + 1}/${RUNS}: running after ${Math.round(running.at(-1)!)} ms (agent ${c.ms} ms: ${JSON.stringify(c.steps)}), console prompt after ${Math.round(consoleMs.at(-1)!)} ms`);
        const del = await api('DELETE', `/api/vms/${id}`);
        if (del.status >= 300) throw new Error(`DELETE /api/vms/${id} answered ${del.status}`);
        await waitUntil(`VM ${id} to be gone`, 60_000, async () => (await api('GET', `/api/vms/${id}`)).status === 404);
      }
      const insideMedian = figure('x', 'ms', inside).value;
      return [
        ...(await sshFigures(ctx)), // a real OS (bench/template.ts), beside the tiny guest's console figure
        figure('vm.request_to_running_ms', 'ms', running, {
          note: `${agent.what}: POST /api/vms to GET /api/vms/:id saying running (polled every 25 ms): controller + real agent + libvirt on TCG, test guest (kernel + busybox initramfs, 128 MiB), ${RUNS} runs`,
        }),
        figure('vm.request_to_console_ms', 'ms', consoleMs, {
          note: 'POST /api/vms to the shell prompt on the serial console through the controller\'s WebSocket (includes the guest\'s boot under TCG)',
        }),
        withTarget(figure('vm.overhead_ms', 'ms', overhead, {
          baseline: inside,
          note: `request_to_running minus the time inside libvirt/QEMU (baseline, median ${insideMedian} ms: qemu-img and DHCP entry side by side, then virsh define and virsh start, as the agent timed them); controller and agent together`,
        }), { below: 150 }),
      ];
    });
  },
};
