// A real controller process SIGKILLed at random moments during a burst of 50 VM requests, each with its
// own Idempotency-Key, and restarted; every key is retried. Afterwards every key maps to exactly one VM
// or one clear failure, no record stays `creating`, every answer given before a kill still holds, and
// the hosts (simulated agents: the real agent app over the in-memory hypervisor) run no VM the
// controller does not know. The kill moments come from a seeded random: SKYHOST_TEST_SEED=N replays one.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { CONFIG_KEYS, envName } from '../../base/config.ts';
import { prng as seeded } from '../../bench/scheduler.ts';
import { freePort, jsonOrText, waitFor } from '../support/net.ts';
import { SimAgent } from '../support/sim-agent.ts';

const KEYS = 50;
const KILLS = 3;
const WORKERS = 8;

interface Answer { status: number; json: any }

/** Plain HTTP on one port for the test's loopback agents, where this build has settings for HTTPS. */
const PLAIN_HTTP: Record<string, string> = Object.fromEntries(
  ([['httpsPort', '0'], ['trustedLan', 'true']] as const).filter(([k]) => (CONFIG_KEYS as string[]).includes(k)).map(([k, v]) => [envName(k), v]));

describe('controller SIGKILLed during a burst of keyed VM requests (child process, simulated agents)', function () {
  this.timeout(300_000); // four starts of a controller process, as slow as a loaded machine makes them
  const seed = Number(process.env.SKYHOST_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const random = seeded(seed);
  let dir: string;
  let base: string;
  let port: number;
  let child: ChildProcess | undefined;
  let log = '';
  let token: string;
  const agents: SimAgent[] = [];
  /** Requests cut by a kill while the controller had them (not refused while it was down). */
  let interrupted = 0;

  async function startController(): Promise<void> {
    const c = spawn(process.execPath, ['appliance/main.ts', 'controller', '--data', dir, '--port', String(port)], {
      // The seed variable is the test's, not a setting: the controller refuses SKYHOST_* names it does not know.
      env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SKYHOST_TEST_SEED')), SKYHOST_LISTEN: '127.0.0.1', SKYHOST_ADVERTISE: 'false', SKYHOST_POLL_INTERVAL_SECONDS: '1', ...PLAIN_HTTP },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child = c;
    c.stderr!.on('data', (d) => { log += String(d); });
    await waitFor('the controller to listen', async () => {
      if (c.exitCode !== null) throw new Error(`controller exited: ${log.slice(-2000)}`);
      return (await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1000) })).ok;
    }, 60_000, 50); // a node process on a loaded machine
  }

  async function kill(): Promise<void> {
    const c = child!;
    child = undefined;
    if (c.exitCode !== null || c.signalCode !== null) return;
    await new Promise((resolve) => {
      c.once('exit', resolve);
      c.kill('SIGKILL');
    });
  }

  async function call(method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
    const res = await fetch(base + p, {
      method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(15_000),
    });
    return { status: res.status, json: jsonOrText(await res.text()) };
  }

  const request = (key: string) => call('POST', '/api/vms', { template: 'alpine', memoryMiB: 128 }, { 'idempotency-key': key });
  /** The VM an answer names: a 2xx's VM, or a failure's `details.vm`. */
  const vmOf = (a: Answer): string | undefined => (a.status < 300 ? a.json?.id ?? a.json?.vm?.id : a.json?.error?.details?.vm?.id);

  /**
   * Sends `key` until the controller answers with something other than "not listening" or "no host
   * fits yet" (right after a restart the hosts' capacities are not known until the first poll).
   */
  async function send(key: string, until: number): Promise<Answer> {
    for (;;) {
      try {
        const a = await request(key);
        if (a.status !== 503 || Date.now() > until) return a;
      } catch (err) {
        if (Date.now() > until) throw err;
        if (!/ECONNREFUSED/.test(String((err as Error).cause))) interrupted++; // cut mid-request, not refused at the door
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  before(async () => {
    console.log(`      seed ${seed} (replay: SKYHOST_TEST_SEED=${seed})`);
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-crash-'));
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    await startController();
    token = readFileSync(path.join(dir, 'secrets', 'admin-token'), 'utf8').trim();
    const joinToken = readFileSync(path.join(dir, 'secrets', 'join-token'), 'utf8').trim();
    for (let i = 0; i < 2; i++) {
      // A create takes 50-250 ms on the host, so kills land while agents are still creating.
      const agent = await new SimAgent({ hostname: `pc-${i}`, threads: 64, memoryMiB: 65536, createDelayMs: 50 + Math.floor(random() * 200) }).start();
      agents.push(agent);
      await agent.enroll(base, joinToken);
    }
    await waitFor('both hosts polled', async () => {
      const hosts = (await call('GET', '/api/hosts')).json.hosts as { state: string; capacity?: unknown }[];
      return hosts.length === 2 && hosts.every((h) => h.state === 'ready' && h.capacity);
    }, 45_000);
  });

  after(async () => {
    if (child) await kill();
    await Promise.allSettled(agents.map((a) => a.stop()));
    rmSync(dir, { recursive: true, force: true });
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') console.log(`seed ${seed}; controller log tail:\n${log.split('\n').slice(-40).join('\n')}`);
  });

  it('should map every key to one VM or one clear failure, keep every answer given, and leave no unknown VM on the hosts', async () => {
    const keys = Array.from({ length: KEYS }, (_, i) => `crash-${seed}-${i}`);
    const firstAnswers = new Map<string, Answer>();
    const deadline = Date.now() + 90_000;
    let next = 0;
    let burstOver = false;
    const workers = Array.from({ length: WORKERS }, async () => {
      while (next < keys.length) {
        const key = keys[next++]!;
        firstAnswers.set(key, await send(key, deadline));
      }
    });
    // The killer: KILLS times, at a random moment 20-700 ms into the controller's life, SIGKILL and restart.
    const killer = (async () => {
      const moments: number[] = [];
      for (let k = 0; k < KILLS && !burstOver; k++) {
        const wait = 20 + Math.floor(random() * 680);
        moments.push(wait);
        await new Promise((r) => setTimeout(r, wait));
        await kill();
        await startController();
      }
      return moments;
    })();
    await Promise.all(workers);
    burstOver = true;
    const moments = await killer;
    console.log(`      kills at ${moments.join(', ')} ms into the controller's life; ${interrupted} requests cut mid-way`);

    // Retry every key: the same answer for each, or the VM's outcome now that the crash is over.
    await waitFor('no record left creating', async () => {
      const vms = (await call('GET', '/api/vms')).json.vms as { state: string }[];
      return vms.every((v) => v.state !== 'creating');
    }, 60_000, 250);
    const finalAnswers = new Map<string, Answer>();
    for (const key of keys) finalAnswers.set(key, await send(key, Date.now() + 10_000));

    const vms = (await call('GET', '/api/vms')).json.vms as { id: string; host: string; state: string }[];
    const byKey = new Map<string, string>();
    let answered = 0;
    let failures = 0;
    let remade = 0;
    for (const key of keys) {
      const first = firstAnswers.get(key)!;
      const final = finalAnswers.get(key)!;
      const vmId = vmOf(final);
      expect(vmId, `${key}: ${JSON.stringify(final)}`).to.be.a('string');
      if (final.status >= 400) {
        failures++;
        console.log(`      ${key}: ${final.status} ${final.json.error.code}: ${final.json.error.message}`);
        expect(final.json.error.code, key).to.be.a('string');
        expect(final.json.error.message, key).to.match(/could not be created/);
        // A create the crash cut before it reached the host is made by the retry, not reported as failed.
        expect(final.json.error.message, key).not.to.contain('its creation was interrupted');
      } else {
        expect(final.status, key).to.be.oneOf([201, 202]);
        expect(final.json.state ?? final.json.vm?.state, key).not.to.equal('creating');
      }
      // An answer that named a VM before a kill still names the same VM: nothing answered is lost. Only a
      // 202 (`creating`: outcome unknown) whose create the crash cut may name a new VM made by the retry.
      if (vmOf(first)) {
        answered++;
        if (vmOf(first) !== vmId) {
          expect(first.status, `${key}: first ${JSON.stringify(first)}, final ${JSON.stringify(final)}`).to.equal(202);
          expect(vms.map((v) => v.id), `${key}: the first VM is gone`).not.to.include(vmOf(first));
          remade++;
        }
        if (first.status < 300) expect(final.status, `${key}: answered ${first.status} first`).to.be.below(300);
      }
      byKey.set(key, vmId!);
    }
    // One VM per key, and every VM record is some key's: no key made two.
    expect(new Set(byKey.values()).size, 'two keys share a VM').to.equal(KEYS);
    expect(vms.map((v) => v.id).sort()).to.deep.equal([...byKey.values()].sort());
    expect(vms.filter((v) => v.state === 'creating')).to.deep.equal([]);

    // The hosts run exactly the VMs the controller knows (and holds as not failed), each on its host.
    const onHosts = agents.flatMap((a) => [...a.vms.keys()].map((id) => `${id}@${a.hostId}`)).sort();
    expect(onHosts).to.deep.equal(vms.filter((v) => v.state !== 'error').map((v) => `${v.id}@${v.host}`).sort());
    expect((await call('GET', '/api/strangers')).json.strangers).to.deep.equal([]);
    console.log(`      ${KEYS} keys: ${answered} answered before the end of the burst, ${vms.length} VMs found afterwards ` +
      `(${vms.length - failures} running, ${failures} clear failures; ${remade} answered 202 were made anew by their retry), lost 0`);
  });
});
