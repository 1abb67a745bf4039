// Group `class`: class sessions (server/classes/sessions.ts), one VM per student in one action.
//
// `class.session_30_ms`: the real controller (`skyhost controller`, its own process) with 200 simulated
// hosts (the real agent app over the in-memory hypervisor, in this process, as in the controller
// group); an admin starts a session of a 30-student class (`POST /api/classes/:id/sessions`), whose
// answer comes once every VM is recorded `creating` and placed. The figure is the controller's own
// time, from the request reaching the session service to the last VM `creating` (its log line's
// `creatingMs`); the note gives the whole request's time and the controller's CPU time for it. "End
// now" deletes the VMs between runs. Beside it (baseline): the same 30 VMs as 30 `POST /api/vms` at
// once, until the last answer.
// `class.session_30_ready_s`: the real agent on this machine's libvirt (TCG) with the test guest
// (kernel + busybox initramfs, test/support/guest.ts): a session of N students, until every VM's
// serial console shows the guest's prompt through the controller's WebSocket; beside it (baseline)
// N times the same for a session of one student.
import { GUEST_PROMPT } from '../test/support/guest.ts';
import { SimFleet } from '../test/support/sim-agent.ts';
import type { BenchContext, Group } from './group.ts';
import { cpuSeconds, startControllerProcess, waitUntil, type ControllerProcess } from './processes.ts';
import { figure, median, msSince, notMeasured, withTarget, type Figure } from './stats.ts';
import { consoleShows, withTestGuestAgent } from './vm.ts';

const HOSTS = 200;
const STUDENTS = 30;
const RUNS = 7;
/** Real VMs at once on this machine (2 cores, TCG): each test guest has 128 MiB. */
const REAL_VMS = 4;
const REAL_RUNS = 2;
const TEMPLATE = 'bench-guest';

type Api = (method: string, p: string, body?: unknown) => Promise<{ status: number; body: any }>;

function apiOf(url: string, token: string): Api {
  return async (method, p, body) => {
    const res = await fetch(url + p, {
      method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(120_000),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : {} };
  };
}

/** A class of `count` students made through the API (the admin teaches every class); its id. */
async function makeClass(api: Api, name: string, count: number): Promise<string> {
  const made = await api('POST', '/api/classes', { name });
  if (made.status !== 201) throw new Error(`POST /api/classes answered ${made.status}: ${JSON.stringify(made.body)}`);
  const id = String(made.body.class.id);
  const students = await api('POST', `/api/classes/${id}/students/bulk`, { prefix: `${name}-`, count });
  if (students.status !== 201 || students.body.created?.length !== count) throw new Error(`adding ${count} students answered ${students.status}: ${JSON.stringify(students.body).slice(0, 300)}`);
  return id;
}

/** Starts a session; throws unless every student got a VM. */
async function startSession(api: Api, classId: string, body: Record<string, unknown>): Promise<{ id: string; vmIds: string[]; states: string[] }> {
  const started = await api('POST', `/api/classes/${classId}/sessions`, body);
  if (started.status !== 201) throw new Error(`starting a session answered ${started.status}: ${JSON.stringify(started.body).slice(0, 300)}`);
  const s = started.body as { id: string; failures: unknown[]; tiles: Array<{ vm?: { id: string; state: string } }> };
  if (s.failures.length > 0) throw new Error(`the session left students without a VM: ${JSON.stringify(s.failures).slice(0, 300)}`);
  return { id: s.id, vmIds: s.tiles.map((t) => t.vm!.id), states: s.tiles.map((t) => t.vm!.state) };
}

/** "End now", then waits until the session says ended (its VMs deleted). */
async function endSession(api: Api, id: string): Promise<void> {
  const ended = await api('POST', `/api/sessions/${id}/end`);
  if (ended.status !== 202) throw new Error(`ending session ${id} answered ${ended.status}`);
  await waitUntil(`session ${id} to end`, 120_000, async () => (await api('GET', `/api/sessions/${id}`)).body.state === 'ended', 100);
}

export async function sessionOnSimulatedHosts(ctx: BenchContext): Promise<Figure[]> {
  let controller: ControllerProcess | undefined;
  let fleet: SimFleet | undefined;
  try {
    controller = await startControllerProcess(ctx.root, { SKYHOST_LOG_LEVEL: 'info', SKYHOST_LOG_FORMAT: 'json' });
    const { url, token, joinToken, pid } = controller;
    const api = apiOf(url, token);
    // The controller's own measure: from the request reaching the session service to every VM `creating`.
    const inController = new Map<string, number>();
    controller.onLine((line) => {
      if (!line.includes('creatingMs')) return;
      try {
        const r = JSON.parse(line) as { sessionId?: string; creatingMs?: number };
        if (r.sessionId && typeof r.creatingMs === 'number') inController.set(r.sessionId, r.creatingMs);
      } catch {
        // not a JSON log line
      }
    });
    ctx.say(`class: starting ${HOSTS} simulated agents`);
    fleet = await SimFleet.start(HOSTS, (i) => ({ memoryMiB: [8192, 16384, 32768][i % 3]!, threads: [4, 8, 16][i % 3]! }));
    await fleet.enroll(url, joinToken);
    await waitUntil(`the controller to have polled ${HOSTS} hosts`, 60_000, async () => {
      const body = (await api('GET', '/api/hosts')).body as { hosts?: Array<{ state: string; capacity?: unknown }> };
      return (body.hosts ?? []).filter((h) => h.state === 'ready' && h.capacity !== undefined).length >= HOSTS;
    }, 500);
    const classId = await makeClass(api, 'bench-7b', STUDENTS);
    const wall: number[] = [];
    const controllerMs: number[] = [];
    const cpu: number[] = [];
    const hostsUsed: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const cpu0 = cpuSeconds(pid);
      const t0 = process.hrtime.bigint();
      const s = await startSession(api, classId, { template: 'alpine', vcpus: 1, memoryMiB: 512, minutes: 45 });
      wall.push(msSince(t0));
      cpu.push((cpuSeconds(pid) - cpu0) * 1000);
      if (s.states.some((x) => x !== 'creating' && x !== 'running')) throw new Error(`session ${s.id} answered with VMs ${[...new Set(s.states)].join(', ')}`);
      const vms = (await api('GET', '/api/vms?limit=1000')).body.vms as Array<{ id: string; host: string }>;
      hostsUsed.push(new Set(vms.filter((v) => s.vmIds.includes(v.id)).map((v) => v.host)).size);
      await waitUntil('the controller\'s log line of the session', 10_000, async () => inController.has(s.id), 50);
      controllerMs.push(inController.get(s.id)!);
      ctx.say(`class run ${i + 1}/${RUNS}: ${STUDENTS} VMs creating after ${controllerMs.at(-1)} ms in the controller, ${Math.round(wall.at(-1)!)} ms for the request (controller CPU ${Math.round(cpu.at(-1)!)} ms), on ${hostsUsed.at(-1)} hosts`);
      await endSession(api, s.id);
    }
    // Beside it: the same 30 VMs as 30 POST /api/vms at once (a class pressing "Request VM"), until the last answer.
    const burst: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = process.hrtime.bigint();
      const answers = await Promise.all(Array.from({ length: STUDENTS }, (_, k) => api('POST', '/api/vms', { template: 'alpine', vcpus: 1, memoryMiB: 512, name: `burst-${i}-${k}` })));
      burst.push(msSince(t0));
      const bad = answers.find((a) => a.status !== 201 && a.status !== 202);
      if (bad) throw new Error(`POST /api/vms answered ${bad.status}: ${JSON.stringify(bad.body).slice(0, 200)}`);
      await Promise.all(answers.map((a) => api('DELETE', `/api/vms/${String(a.body.id)}`)));
    }
    return [withTarget(figure('class.session_30_ms', 'ms', controllerMs, {
      baseline: burst,
      note: `${controller.what}: POST /api/classes/:id/sessions for ${STUDENTS} students, in the controller from the request to every VM creating (placed, recorded, agent call sent; its log's creatingMs), ` +
        `${HOSTS} simulated hosts, ${RUNS} runs; the whole request median ${Math.round(median(wall))} ms; controller CPU median ${Math.round(median(cpu))} ms (/proc, 10 ms ticks); VMs spread over ${Math.min(...hostsUsed)}-${Math.max(...hostsUsed)} hosts; ` +
        `baseline: the same 30 VMs as 30 POST /api/vms at once, until the last answer`,
    }), { below: 500 })];
  } finally {
    await fleet?.stop();
    await controller?.stop();
  }
}

export async function sessionOnRealAgent(ctx: BenchContext): Promise<Figure[]> {
  return withTestGuestAgent(ctx, { hostIdPrefix: 'bench-class', template: TEMPLATE }, async ({ controller }) => {
    const { url, token } = controller;
    const api = apiOf(url, token);
    /** Waits until VM `id` runs, then until its console shows the prompt (a console asked too early is asked again). */
    const answers = async (id: string, until: number): Promise<void> => {
      for (;;) {
        const vm = (await api('GET', `/api/vms/${id}`)).body as { state?: string; error?: string };
        if (vm.state === 'error') throw new Error(`VM ${id} failed: ${vm.error ?? ''}`);
        if (vm.state === 'running') {
          try {
            await consoleShows(`${url.replace(/^http/, 'ws')}/api/vms/${id}/console`, token, GUEST_PROMPT, Math.max(1000, until - Date.now()));
            return;
          } catch (err) {
            if (Date.now() > until) throw err;
          }
        }
        if (Date.now() > until) throw new Error(`VM ${id} did not answer on its console within 300 s (state ${vm.state})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    /** Seconds from the start of a session of `classId` until every VM's console shows the prompt. */
    const ready = async (classId: string): Promise<number> => {
      const t0 = process.hrtime.bigint();
      const s = await startSession(api, classId, { template: TEMPLATE, vcpus: 1, memoryMiB: 128, minutes: 30 });
      try {
        const until = Date.now() + 300_000;
        await Promise.all(s.vmIds.map((id) => answers(id, until)));
        return msSince(t0) / 1000;
      } finally {
        await endSession(api, s.id);
      }
    };
    const one = await makeClass(api, 'bench-one', 1);
    const many = await makeClass(api, 'bench-many', REAL_VMS);
    const oneS: number[] = [];
    const manyS: number[] = [];
    for (let i = 0; i < REAL_RUNS; i++) {
      oneS.push(await ready(one));
      ctx.say(`class: a session of 1 student ready after ${oneS.at(-1)!.toFixed(1)} s`);
      manyS.push(await ready(many));
      ctx.say(`class: a session of ${REAL_VMS} students ready after ${manyS.at(-1)!.toFixed(1)} s`);
    }
    return [figure('class.session_30_ready_s', 's', manyS, {
      baseline: oneS.map((x) => x * REAL_VMS),
      note: `N = ${REAL_VMS} real VMs (the 2-core machine under TCG): session start to every VM's serial console showing the test guest's prompt through the controller's WebSocket ` +
        `(${controller.what} + real agent + libvirt, test guest 128 MiB), ${REAL_RUNS} runs; baseline: ${REAL_VMS} x a session of one student (median ${median(oneS).toFixed(1)} s)`,
    })];
  });
}

/** Each half fails on its own: the other's figure stands. */
async function orNull(ctx: BenchContext, ids: Array<[string, string]>, run: () => Promise<Figure[]>): Promise<Figure[]> {
  try {
    return await run();
  } catch (err) {
    const why = `failed: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
    ctx.say(`class: ${ids.map(([id]) => id).join(', ')} ${why}`);
    return ids.map(([id, unit]) => notMeasured(id, unit, why));
  }
}

export const classGroup: Group = {
  name: 'class',
  ids: [
    ['class.session_30_ms', 'ms'],
    ['class.session_30_ready_s', 's'],
  ],
  async run(ctx) {
    return [
      ...(await orNull(ctx, [['class.session_30_ms', 'ms']], () => sessionOnSimulatedHosts(ctx))),
      ...(await orNull(ctx, [['class.session_30_ready_s', 's']], () => sessionOnRealAgent(ctx))),
    ];
  },
};
