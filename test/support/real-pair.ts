// A controller and one real agent (libvirt + QEMU) in this process, the agent enrolled with the
// cluster token: the harness of the tests that take a VM through the controller onto a real host.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { TemplateStore } from '../../agent/templates.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { defaults } from '../../base/config.ts';
import { configureLogging, logger } from '../../base/log.ts';
import type { AccelReport } from '../../host/accel.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { waitFor } from './net.ts';

/** One JSON exchange with the controller's API: the status and the parsed body (undefined when empty). */
export type ApiCall = (method: string, path: string, body?: unknown) => Promise<{ status: number; json: any }>;

/** Calls to the API at `baseUrl()` with the bearer token given at each call (tests that act as several users). */
export function tokenApi(baseUrl: () => string): (method: string, path: string, token: string, body?: unknown) => Promise<{ status: number; json: any }> {
  return async (method, p, token, body) => {
    const res = await fetch(baseUrl() + p, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  };
}

/** Calls to the API at `baseUrl()` with the bearer `token()` (both read at each call). */
export function bearerApi(baseUrl: () => string, token: () => string): ApiCall {
  const call = tokenApi(baseUrl);
  return (method, p, body) => call(method, p, token(), body);
}

export interface RealPair {
  /** The test's folder (agent/ and controller/ below it); removed by stop(). */
  work: string;
  hostId: string;
  agent: RunningAgent;
  ctl: RunningController;
  /** The controller's API as the admin. */
  api: ApiCall;
  stop(): Promise<void>;
}

export interface RealPairOptions {
  /** Names the folder and the host id, e.g. `ctl-real`. */
  name: string;
  /** The agent's SSH forwarding ports, distinct per test file, e.g. `42200-42299`. */
  sshPortRange: string;
  /** Puts the template(s) into the agent's store before it starts, so its first status sample lists them. */
  templates: (agent: Pick<RunningAgent, 'templates'>, work: string) => Promise<void>;
  /** The template the controller must have heard of before the tests start. */
  waitForTemplate: string;
  accel?: AccelReport;
}

/** Starts the agent, fills its store, starts the controller, enrolls the agent and waits for its template. */
export async function startRealPair(opts: RealPairOptions): Promise<RealPair> {
  const work = mkdtempSync(path.join(tmpdir(), `skyhost-${opts.name}-`));
  const hostId = `${opts.name}-${process.pid}`;
  let agent: RunningAgent | undefined;
  let ctl: RunningController | undefined;
  const stop = async (): Promise<void> => {
    // each step is tried whatever the one before it did: a leftover domain or NAT network would outlive the run
    await ctl?.stop().catch((err: Error) => process.stderr.write(`controller stop: ${err.message}\n`));
    if (agent) {
      for (const vm of agent.vms.list()) await agent.vms.delete(vm.id).catch((err: Error) => process.stderr.write(`delete ${vm.id}: ${err.message}\n`));
      await agent.stop().catch((err: Error) => process.stderr.write(`agent stop: ${err.message}\n`));
    }
    await removeNetwork(networkName(hostId)); // the host id is new each run: its NAT network would stay behind
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  };
  try {
    configureLogging({ out: () => {} });
    chmodSync(work, 0o711); // QEMU (libvirt-qemu) walks into the agent's data folder below it
    const dataDir = path.join(work, 'agent');
    // Filled before the agent starts: a template added later would reach the controller only with the
    // agent's next status sample (every 5 s), which the tests would wait for.
    await opts.templates({ templates: new TemplateStore(dataDir) }, work);
    agent = await startAgent({
      config: { ...defaults({ isRoot: true, cwd: work }), dataDir, listen: '127.0.0.1', sshPortRange: opts.sshPortRange },
      log: logger('agent'), hostId, port: 0, listen: '127.0.0.1', key: `${opts.name}-agent-key-0123456789`,
      ...(opts.accel ? { accel: opts.accel } : {}),
    });
    ctl = await startController({ dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', pollIntervalSeconds: 1 });
    const enrolled = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId, hostname: `lab-pc-${opts.name}`, agentUrl: agent.url, agentKey: agent.key, joinToken: ctl.services.secrets.joinToken, version: 'test' }),
    });
    if (enrolled.status !== 200) throw new Error(`enrollment answered ${enrolled.status}: ${await enrolled.text()}`);
    const started = ctl;
    await waitFor(`the host to report template ${opts.waitForTemplate}`, () => started.services.templates.find(opts.waitForTemplate) !== undefined, 60_000); // the first status on a loaded machine
    return { work, hostId, agent, ctl, api: bearerApi(() => started.url, () => started.services.secrets.adminToken), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
