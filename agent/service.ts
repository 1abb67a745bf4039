// Starting and stopping an agent: identity (host id, key), acceleration, the hypervisor, the stores
// and managers, adoption of this host's VMs, the HTTP server. `assembleAgent` puts the parts together
// (the simulated agent in test/support/ does it with its fakes). `skyhost agent` calls startAgent, and
// so does `skyhost up` (in-process, next to the controller).
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, type Config } from '../base/config.ts';
import { CommandFailed, Unavailable } from '../base/errors.ts';
import { detectAccel, type AccelReport } from '../host/accel.ts';
import { listen } from '../base/http.ts';
import { ensureIdentity, isLoopback, normalizeFingerprint, tlsOrPlainServer } from '../base/tls.ts';
import { parseJoin } from '../wire/join.ts';
import type { Logger } from '../base/log.ts';
import { VERSION } from '../base/version.ts';
import type { HostStatus, Hypervisor as Accel } from '../wire/api.ts';
import { buildAgentApp, type AgentApp } from './app.ts';
import { lanAddress } from '../base/net.ts';
import { readJoinToken, startDiscovery, type ControllerBrowser, type Discovery } from './discovery/index.ts';
import { startEventForwarder, type EventForwarder } from './eventlog.ts';
import { parsePortRange, PortForwarder, type SshForwarder } from './forwarder.ts';
import type { Hypervisor } from './hypervisor/driver.ts';
import { loadHypervisor } from './hypervisor/load.ts';
import { SystemResources, type HostResources } from './resources.ts';
import { commandPower, parsePowerCommand, type PowerControl } from './power.ts';
import { TemplatePuller } from './pull.ts';
import { StatusSampler } from './status.ts';
import { TemplateStore, type TemplateCatalog } from './templates.ts';
import type { CreateStep } from './vms/create.ts';
import { VmManager } from './vms/manager.ts';

/** What an agent is made of; `startAgent` brings the real ones, the simulated agent its fakes. */
export interface AgentParts {
  hostId: string;
  key: string;
  dataDir: string;
  accel: AccelReport;
  hypervisor: Hypervisor;
  templates: TemplateCatalog;
  forwarder: SshForwarder;
  resources: HostResources;
  /** The address people use to reach this host's SSH ports. */
  sshHost: string;
  log: Logger;
  /** Which controller this agent belongs to, for `/status`. */
  controller?: () => HostStatus['controller'];
  /** JSON body limit and largest template upload of the API (see AgentAppDeps). */
  bodyLimit?: string | number;
  maxUploadBytes?: number;
  afterStep?: (step: CreateStep, vmId: string) => void | Promise<void>;
  /** How `POST /sleep` switches the machine off (none: it cannot). */
  power?: PowerControl;
}

/** An agent without its listening socket: VMs adopted, status sampled, the API ready to serve. */
export interface AssembledAgent extends AgentApp {
  vms: VmManager;
  status: StatusSampler;
  /** How many VMs were adopted. */
  adopted: number;
  /** Lets go of consoles, forwards and timers; VMs keep running. */
  stop(): Promise<void>;
}

/** Builds an agent from its parts: adopts this host's VMs, takes the first status sample, builds the app. */
export async function assembleAgent(p: AgentParts): Promise<AssembledAgent> {
  const accel: Accel = p.accel.accel;
  const vms = new VmManager({
    hostId: p.hostId, dataDir: p.dataDir, accel, hypervisor: p.hypervisor, templates: p.templates, forwarder: p.forwarder,
    sshHost: p.sshHost, log: p.log, ...(p.afterStep ? { afterStep: p.afterStep } : {}),
  });
  const status = new StatusSampler({
    hostId: p.hostId, accel, ...(p.accel.reason ? { accelReason: p.accel.reason } : {}), hypervisor: p.hypervisor, resources: p.resources,
    vms, templates: p.templates, log: p.log, ...(p.controller ? { controller: p.controller } : {}),
  });
  let adopted: number;
  try {
    adopted = await vms.adopt();
    await status.start();
  } catch (err) {
    // consoles and forwards of the VMs adopted so far are let go; the VMs themselves keep running
    status.stop();
    await vms.stop();
    await p.hypervisor.close();
    throw err;
  }
  // Pulls need real files: the simulated agent's in-memory templates have none.
  const pulls = p.templates instanceof TemplateStore ? new TemplatePuller({ store: p.templates, log: p.log, installed: () => status.refresh() }) : undefined;
  const app = buildAgentApp({
    key: p.key, hostId: p.hostId, vms, templates: p.templates, status, log: p.log, ...(pulls ? { pulls } : {}), ...(p.power ? { power: p.power } : {}),
    ...(p.bodyLimit !== undefined ? { bodyLimit: p.bodyLimit } : {}), ...(p.maxUploadBytes !== undefined ? { maxUploadBytes: p.maxUploadBytes } : {}),
  });
  return {
    ...app,
    vms,
    status,
    adopted,
    async stop() {
      status.stop();
      app.close();
      await vms.stop();
      // VMs keep their network; one that no VM uses is not left behind (docs/design.md#cli)
      await p.hypervisor.releaseNetwork().catch((err: unknown) => p.log.warn('could not check or remove the VM network on stop', { err }));
      await p.hypervisor.close();
    },
  };
}

/**
 * Stops an agent and the HTTP server that serves it, in the one order that finishes: its console
 * WebSockets (and consoles still being answered) first, then the server, then the agent itself.
 * A server's close waits for every open connection: a console whose browser left it half-open kept
 * that close from finishing (test/integration/console-half-open.test.ts). The agent itself stops
 * last, once nothing reaches it.
 * `closeServer` is absent when the agent never got a listening server.
 */
export async function stopServedAgent(agent: AssembledAgent, closeServer?: () => Promise<void>): Promise<void> {
  agent.close();
  if (closeServer) await closeServer();
  await agent.stop();
}

export interface StartAgentOptions {
  config: Config;
  log: Logger;
  /** The bearer key; default config.agentKey, else DATA/secrets/agent-key (created 0600). */
  key?: string;
  /** Default config.hostId, else /etc/machine-id. */
  hostId?: string;
  /** Port to listen on (default config.agentPort; 0 picks a free one). */
  port?: number;
  /** Address to listen on (default config.listen). */
  listen?: string;
  /** Force the accelerator instead of probing (tests; SKYHOST_ACCEL does the same for a process). */
  accel?: AccelReport;
  /** Find the controller (mDNS, or config controllerUrl) and enroll: `skyhost agent` does. */
  enroll?: boolean;
  /** With `enroll`: an mDNS browser started before this, so that answers arrive while the agent starts. */
  browser?: ControllerBrowser;
  /** Test hook: runs after each create step (throw to inject a failure there). */
  afterStep?: (step: CreateStep, vmId: string) => void | Promise<void>;
}

export interface RunningAgent {
  url: string;
  port: number;
  key: string;
  hostId: string;
  vms: VmManager;
  templates: TemplateStore;
  /** Enrollment with the controller, when started with `enroll`. */
  discovery?: Discovery;
  /** sha256 of this agent's certificate (DATA/secrets/agent-tls): the controller pins it at enrollment. */
  fingerprint: string;
  stop(): Promise<void>;
}

/** The text of a file, or '' when it does not exist. */
async function readIfExists(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

/** This machine's id (/etc/machine-id), used when no --host-id is given. */
export async function machineId(): Promise<string> {
  const id = (await readIfExists('/etc/machine-id')).trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(id)) {
    throw new Unavailable('this machine has no usable /etc/machine-id: give the agent --host-id ID');
  }
  return id;
}

/** The standalone agent's key: DATA/secrets/agent-key, created (0600) if missing. */
export async function agentKey(dataDir: string): Promise<string> {
  const file = path.join(dataDir, 'secrets', 'agent-key');
  const existing = (await readIfExists(file)).trim();
  if (existing.length >= 16) return existing;
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const key = randomBytes(24).toString('base64url');
  await writeFile(file, key + '\n', { mode: 0o600 });
  await chmod(file, 0o600);
  return key;
}

/** The address people on the LAN use to reach this host: from agentUrl, else the LAN address. */
export function publicAddress(config: Config): string {
  if (config.agentUrl) return new URL(config.agentUrl).hostname;
  return lanAddress(config.lanInterface)?.ip ?? '127.0.0.1';
}

/** QEMU (libvirt-qemu) must be able to walk into the data folder to reach disks and sockets. */
async function makeTraversable(dir: string): Promise<void> {
  const st = await stat(dir);
  if ((st.mode & 0o001) === 0) await chmod(dir, (st.mode & 0o7777) | 0o011);
}

/**
 * The join token and the controller's trust, from config `joinToken` (or the token file): a join
 * string gives all three, a bare token only itself (the fingerprint then comes from
 * `controllerFingerprint`, or is recorded at first contact).
 */
export function enrollTrust(enroll: boolean, config: Config): { token?: string; fingerprint?: string; addresses?: string[] } {
  const flag = config.controllerFingerprint ? normalizeFingerprint(config.controllerFingerprint) : undefined;
  const text = enroll ? readJoinToken(config.joinToken) : undefined;
  let join: ReturnType<typeof parseJoin> | undefined;
  try {
    join = text ? parseJoin(text) : undefined;
  } catch (err) {
    throw new ConfigError('joinToken', (err as Error).message);
  }
  if (flag && join?.fingerprint && flag !== join.fingerprint) {
    throw new ConfigError('controllerFingerprint', 'the join string names another controller certificate than --controller-fingerprint: give one of them');
  }
  const fingerprint = join?.fingerprint ?? flag;
  return { ...(join ? { token: join.token } : {}), ...(fingerprint ? { fingerprint } : {}), ...(join?.addresses ? { addresses: join.addresses } : {}) };
}

/** Starts an agent: adopts this host's VMs, then serves the API. */
export async function startAgent(opts: StartAgentOptions): Promise<RunningAgent> {
  const { config, log } = opts;
  const dataDir = config.dataDir;
  await mkdir(dataDir, { recursive: true, mode: 0o711 });
  await makeTraversable(dataDir);
  const hostId = opts.hostId ?? config.hostId ?? (await machineId());
  const key = opts.key ?? config.agentKey ?? (await agentKey(dataDir));
  const accel = opts.accel ?? (await detectAccel());
  // What this agent was given to join with: a join string carries the controller's addresses and fingerprint too.
  const join = enrollTrust(opts.enroll === true, config);
  const identity = await ensureIdentity(path.join(dataDir, 'secrets', 'agent-tls'), {
    commonName: `skyhost-agent-${hostId}`, altNames: [publicAddress(config), os.hostname(), 'localhost', '127.0.0.1'],
  });
  const templates = new TemplateStore(dataDir);
  let discovery: Discovery | undefined;
  let events: EventForwarder | undefined;
  const agent = await assembleAgent({
    hostId, key, dataDir, accel, templates, log,
    hypervisor: await loadHypervisor({ hostId, dataDir, log, exclusive: true }),
    forwarder: new PortForwarder(parsePortRange(config.sshPortRange), opts.listen ?? config.listen),
    resources: new SystemResources(dataDir, log),
    sshHost: publicAddress(config),
    controller: () => discovery?.state(),
    power: commandPower(parsePowerCommand(config.powerOffCommand)),
    ...(opts.afterStep ? { afterStep: opts.afterStep } : {}),
  }).catch((err: unknown) => {
    if (err instanceof CommandFailed) {
      throw new Unavailable(`libvirt (qemu:///system) does not answer: start it with skyhost host setup (${err.message})`, err.details, 'libvirt_unavailable');
    }
    throw err;
  });
  // One port: HTTPS for the LAN, plain HTTP for this machine only (or everyone on a trusted LAN).
  const server = tlsOrPlainServer(agent.app, identity, (address) => config.trustedLan || isLoopback(address));
  server.secure.on('upgrade', agent.onUpgrade);
  server.plain.on('upgrade', agent.onUpgrade);
  const listenHost = opts.listen ?? config.listen;
  const port = await listen(server.net as Server, opts.port ?? config.agentPort, listenHost).catch(async (err: unknown) => {
    await agent.stop();
    throw err;
  });
  const urlHost = listenHost === '0.0.0.0' || listenHost === '::' ? publicAddress(config) : listenHost;
  // Listening on loopback only, no one but this machine can connect: plain http:// is its URL then.
  const scheme = isLoopback(urlHost) ? 'http' : 'https';
  const url = config.agentUrl ?? `${scheme}://${urlHost.includes(':') ? `[${urlHost}]` : urlHost}:${port}`;
  log.info(`agent listening on ${url}`, { hostId, dataDir, hypervisor: accel.accel, adopted: agent.adopted });
  if (opts.enroll) {
    discovery = startDiscovery({
      dataDir, hostId, hostname: os.hostname(), agentKey: key, version: VERSION, agentPort: port, log,
      // Listening on one address: that is our URL; on all: the address that reaches the controller.
      controllerUrl: config.controllerUrl, agentUrl: urlHost === listenHost ? url : config.agentUrl, lanInterface: config.lanInterface,
      joinToken: join.token, controllerFingerprint: join.fingerprint, joinAddresses: join.addresses, certFingerprint: identity.fingerprint,
      browser: opts.browser,
    });
    // The controller's event log shows every host's events: ours go there once we are a member.
    const enrolledUrl = () => {
      const s = discovery?.state();
      return s && (s.state === 'ready' || s.state === 'draining') ? s.url : undefined;
    };
    events = startEventForwarder({ key, log, controllerUrl: enrolledUrl, controllerFingerprint: () => discovery?.controllerFingerprint() });
  }
  let stopped: Promise<void> | undefined;
  return {
    url,
    port,
    key,
    hostId,
    vms: agent.vms,
    templates,
    fingerprint: identity.fingerprint,
    ...(discovery ? { discovery } : {}),
    stop() {
      stopped ??= (async () => {
        await events?.stop();
        await discovery?.stop();
        await stopServedAgent(agent, () => server.close());
      })();
      return stopped;
    },
  };
}
