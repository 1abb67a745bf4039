// A console whose browser leaves early does not hold the host: the controller's proxy ends the connection
// to the agent when the browser's socket closed before the agent answered, and an agent that stops ends
// the console WebSockets still open on it (its HTTP server's close waits for every open connection).
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import WebSocket from 'ws';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { waitFor } from '../support/net.ts';
import { SimAgent } from '../support/sim-agent.ts';

/** A TCP relay in front of the agent that can hold new connections (nothing reaches the agent until released). */
class Relay {
  readonly server: Server;
  port = 0;
  hold = false;
  /** The relay's connections to the agent, with whether they were closed. */
  readonly upstreams: Array<{ socket: Socket; closed: Promise<void> }> = [];
  private held: Array<() => void> = [];
  private accepted: Array<() => void> = [];
  private readonly sockets = new Set<Socket>();

  constructor(target: number) {
    this.server = createServer((client) => {
      const pending: Buffer[] = [];
      let upstream: Socket | undefined;
      this.sockets.add(client);
      client.on('data', (d: Buffer) => (upstream ? upstream.write(d) : pending.push(d)));
      client.on('error', () => client.destroy()); // the peer's reset: the close below tears the pair down
      const open = () => {
        upstream = connect(target, '127.0.0.1');
        this.sockets.add(upstream);
        const closed = new Promise<void>((resolve) => upstream!.once('close', () => resolve()));
        this.upstreams.push({ socket: upstream, closed });
        for (const d of pending.splice(0)) upstream.write(d);
        upstream.on('data', (d: Buffer) => client.write(d));
        upstream.on('error', () => upstream!.destroy()); // as above
        upstream.on('close', () => client.destroy());
        client.on('close', () => upstream!.destroy());
      };
      if (this.hold) this.held.push(open);
      else open();
      for (const f of this.accepted.splice(0)) f();
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  /** Resolves at the next connection the relay accepts. */
  nextConnection(): Promise<void> {
    return new Promise((resolve) => this.accepted.push(resolve));
  }

  release(): void {
    this.hold = false;
    for (const open of this.held.splice(0)) open();
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * An agent that stops at once, on a machine however loaded: below the 2 s after which base/http.ts
 * close() forces the connections it knows of (a stop that had to wait for that is not "at once").
 */
const STOPS_AT_ONCE_MS = 1800;

/** Resolves with the time `p` took, or rejects once `ms` passed. */
async function within(ms: number, what: string, p: Promise<unknown>): Promise<number> {
  const t0 = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms} ms`)), ms); });
  try {
    await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
  return Date.now() - t0;
}

describe('a console left half-open (controller proxy and simulated agent)', function () {
  this.timeout(30_000);
  let dir: string;
  let ctl: RunningController | undefined;
  let sim: SimAgent | undefined;
  let relay: Relay | undefined;

  before(() => configureLogging({ out: () => {} }));
  after(() => configureLogging({ out: (line) => process.stderr.write(line + '\n') }));

  afterEach(async () => {
    // what the fix is about: these must not hang (a hung stop leaves the test's own timeout to tell)
    await ctl?.stop();
    await relay?.stop();
    await sim?.stop();
    ctl = sim = relay = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('closes the connection to the agent when the browser left before the agent answered, so the agent stops at once', async () => {
    sim = await new SimAgent({ hostId: 'half-open', hostname: 'half-open' }).start();
    relay = await new Relay(Number(new URL(sim.url).port)).start();
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-half-open-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false });
    const admin = ctl.services.secrets.adminToken;
    const enrolled = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId: sim.hostId, hostname: sim.hostname, agentUrl: `http://127.0.0.1:${relay.port}`, agentKey: sim.key, version: 'test', joinToken: ctl.services.secrets.joinToken }),
    });
    expect(enrolled.status, await enrolled.text()).to.be.below(300);
    await ctl.services.hosts.pollAll();
    const made = await fetch(`${ctl.url}/api/vms`, {
      method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ template: 'alpine', name: 'half-open', vcpus: 1, memoryMiB: 256 }),
    });
    const vm = await made.json() as { id: string };
    expect(made.status, JSON.stringify(vm)).to.equal(201);

    // The browser asks for the console; the controller dials the agent (held by the relay); the browser leaves.
    relay.hold = true;
    const dialed = relay.nextConnection();
    const browser = connect(Number(new URL(ctl.url).port), '127.0.0.1');
    browser.on('error', () => browser.destroy()); // the controller may reset it: this side is leaving anyway
    browser.write(`GET /api/vms/${vm.id}/console HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${Buffer.from('half-open-socket').toString('base64')}\r\nAuthorization: Bearer ${admin}\r\n\r\n`);
    await within(20_000, 'the controller dialling the agent', dialed);
    browser.destroy();
    await sleep(200); // the controller sees the browser gone before the agent answers
    relay.release();

    const upstream = relay.upstreams.at(-1)!;
    // what went wrong was a connection kept forever: the bounds below leave a loaded machine its time
    await within(15_000, 'the controller closing its connection to the agent', upstream.closed);
    const bridge = sim.agentVms()!.bridge(vm.id);
    await waitFor('the agent to drop the viewer', () => bridge.viewerCount() === 0, 10_000, 20).catch(() => undefined);
    expect(bridge.viewerCount(), 'viewers left on the agent').to.equal(0);
    const stopMs = await within(15_000, 'the agent stopping', sim.stop());
    sim = undefined;
    expect(stopMs).to.be.below(STOPS_AT_ONCE_MS);
  });

  it('ends the console WebSockets still open on an agent that stops', async () => {
    sim = await new SimAgent({ hostId: 'open-console', hostname: 'open-console' }).start();
    const made = await fetch(`${sim.url}/vms`, {
      method: 'POST', headers: { authorization: `Bearer ${sim.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'open-console', template: 'alpine' }),
    });
    const vm = await made.json() as { id: string };
    expect(made.status, JSON.stringify(vm)).to.equal(201);
    const ws = new WebSocket(`${sim.url.replace(/^http/, 'ws')}/vms/${vm.id}/console`, { headers: { authorization: `Bearer ${sim.key}` } });
    await new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject));
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));

    // the viewer never closes its side: the agent's stop must
    const stopMs = await within(15_000, 'the agent stopping with a console open', sim.stop());
    sim = undefined;
    expect(stopMs).to.be.below(STOPS_AT_ONCE_MS);
    await within(10_000, 'the viewer seeing its console end', closed);
  });
});
