// The serial console tells the truth, over the agent's own WebSocket on the simulated agent (the real
// agent app over the in-memory hypervisor): its notices follow the VM (connected, rebooting, stopped),
// a replay asks the terminal nothing, and real templates print no test marker. The same through real
// libvirt and a browser: test/e2e/console-truth.test.ts.
import { expect } from 'chai';
import { tinyInit } from '../../agent/tinyguest.ts';
import { duplexPair } from 'node:stream';
import type { WebSocket } from 'ws';
import { SerialBridge, withoutQueries } from '../../agent/console.ts';
import type { PowerState } from '../../agent/hypervisor/driver.ts';
import { Logger } from '../../base/log.ts';
import { ConsoleSession, GUEST_READY } from '../support/guest.ts';
import { SimAgent } from '../support/sim-agent.ts';

describe('serial console notices (simulated agent)', function () {
  this.timeout(60_000);
  let sim: SimAgent;
  let vmId: string;
  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(sim.url + p, {
      method, headers: { authorization: `Bearer ${sim.key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: await res.json() as { id: string; state: string } };
  };

  before(async () => {
    sim = await new SimAgent().start();
    const created = await call('POST', '/vms', { name: 'truth', template: 'alpine' });
    expect(created.status).to.equal(201);
    vmId = created.body.id;
  });
  after(async () => {
    await sim?.stop();
  });

  it('should say connected to a new viewer, then rebooting and connected again around a reboot', async () => {
    const session = await ConsoleSession.open(sim.url, `/vms/${vmId}/console`, sim.key);
    try {
      await session.waitForState('connected', 10_000);
      const from = session.output.length;
      expect((await call('POST', `/vms/${vmId}/reboot`)).status).to.equal(200);
      await session.waitFor(/Simulated VM/, 10_000, from);
      await session.waitForState('connected', 10_000);
      expect(session.states).to.deep.equal(['connected', 'rebooting', 'connected']);
    } finally {
      session.close();
    }
  });

  it('should say stopped when the VM is powered off, and connected once it is started again', async () => {
    const session = await ConsoleSession.open(sim.url, `/vms/${vmId}/console`, sim.key);
    try {
      await session.waitForState('connected', 10_000);
      expect((await call('POST', `/vms/${vmId}/poweroff`)).body.state).to.equal('shutoff');
      await session.waitForState('stopped', 10_000);
      expect((await call('POST', `/vms/${vmId}/start`)).body.state).to.equal('running');
      await session.waitForState('connected', 10_000);
      expect(session.states).to.deep.equal(['connected', 'stopped', 'reconnecting', 'connected']);
    } finally {
      session.close();
    }
  });

  it('should replay the history without the terminal queries in it, announced before it', async () => {
    const first = await ConsoleSession.open(sim.url, `/vms/${vmId}/console`, sim.key);
    try {
      // the fake guest echoes keystrokes as a terminal does: the query lands in the console's history
      first.send('echo before\x1b[6nafter\r');
      await first.waitFor(/beforeafter|before.*after/, 10_000);
    } finally {
      first.close();
    }
    const { WebSocket } = await import('ws');
    const ws = new WebSocket(sim.url.replace(/^http/, 'ws') + `/vms/${vmId}/console`, { headers: { authorization: `Bearer ${sim.key}` } });
    const frames: Array<{ binary: boolean; data: string }> = [];
    await new Promise<void>((resolve, reject) => {
      ws.on('message', (d: Buffer, binary: boolean) => {
        frames.push({ binary, data: d.toString('latin1') });
        if (!binary && d.toString().includes('"console"')) resolve();
      });
      ws.once('error', reject);
    });
    ws.close();
    expect(frames.map((f) => f.binary)).to.deep.equal([false, true, false]);
    expect(JSON.parse(frames[0]!.data)).to.deep.equal({ history: frames[1]!.data.length });
    expect(frames[1]!.data).to.include('echo beforeafter');
    expect(frames[1]!.data).not.to.include('\x1b[6n');
  });
});

/** Attaches a stand-in viewer to `bridge`; the console notices it is sent, in order. */
function noticesOf(bridge: SerialBridge): string[] {
  const notices: string[] = [];
  const viewer = { OPEN: 1, readyState: 1, send: (d: unknown) => { if (typeof d === 'string') notices.push(JSON.parse(d).console); }, on: () => viewer };
  bridge.attach(viewer as unknown as WebSocket);
  return notices;
}

/** Waits until `bridge` is in `state`, or `until` (a Date.now() time) has passed. */
async function stateBy(bridge: SerialBridge, state: string, until: number): Promise<void> {
  while (bridge.state !== state && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
}

describe('a line that breaks before its VM is called off', () => {
  it('should say stopped once the hypervisor says the VM is off, not stay reconnecting', async () => {
    const [agentSide] = duplexPair();
    let connects = 0;
    const line = {
      connect: async () => {
        if (connects++ === 0) return agentSide;
        throw new Error('no QEMU');
      },
      history: async () => Buffer.alloc(0),
    };
    // QEMU closes the socket while libvirt still says running; a moment later, shutoff
    const answers: PowerState[] = ['running', 'running'];
    const bridge = new SerialBridge(line, new Logger('test'), undefined, async () => answers.shift() ?? 'shutoff');
    try {
      const notices = noticesOf(bridge);
      const until = Date.now() + 20_000;
      await stateBy(bridge, 'connected', until);
      agentSide.destroy(); // QEMU went away
      await stateBy(bridge, 'stopped', until);
      expect(notices).to.deep.equal(['reconnecting', 'connected', 'reconnecting', 'stopped']);
    } finally {
      bridge.stop(false);
    }
  });
});

describe('a start whose QEMU answers before the start call returns', () => {
  it('should say reconnecting from the moment the start is asked for, never stopped until the line is up', async () => {
    const [agentSide] = duplexPair();
    let up = false;
    let failed = 0;
    const line = {
      connect: async () => {
        if (up) return agentSide;
        failed++;
        throw new Error('no QEMU');
      },
      history: async () => Buffer.alloc(0),
    };
    const bridge = new SerialBridge(line, new Logger('test'), undefined, async () => (up ? 'running' : 'shutoff'));
    try {
      const notices = noticesOf(bridge);
      await stateBy(bridge, 'stopped', Date.now() + 20_000);
      bridge.starting();
      // a retry of the line fails while the hypervisor still says shutoff, the next reaches the new QEMU
      const before = failed;
      while (failed === before) await new Promise((r) => setTimeout(r, 20));
      up = true;
      await stateBy(bridge, 'connected', Date.now() + 20_000);
      bridge.poke(); // the start call returns
      expect(notices).to.deep.equal(['reconnecting', 'stopped', 'reconnecting', 'connected']);
    } finally {
      bridge.stop(false);
      agentSide.destroy();
    }
  });
});

describe('a reboot the guest ignores', () => {
  it('should not say rebooting for ever: connected again after the longest reboot', async () => {
    const [agentSide] = duplexPair();
    const line = { connect: async () => agentSide, history: async () => Buffer.alloc(0) };
    const bridge = new SerialBridge(line, new Logger('test'), undefined, async () => 'running', { rebootMaxMs: 300 });
    try {
      const notices = noticesOf(bridge);
      await stateBy(bridge, 'connected', Date.now() + 20_000);
      bridge.rebooting();
      expect(bridge.state).to.equal('rebooting');
      // wrong was rebooting for ever: wait for connected (a loaded machine's 300 ms timer may fire late)
      await stateBy(bridge, 'connected', Date.now() + 20_000);
      expect(notices).to.deep.equal(['reconnecting', 'connected', 'rebooting', 'connected']);
    } finally {
      bridge.stop(false);
      agentSide.destroy();
    }
  });
});

describe('terminal queries in a replay', () => {
  it('should drop device status, attribute and colour queries and keep everything else', () => {
    const text = 'a\x1b[6nb\x1b[?6nc\x1b[5nd\x1b[ce\x1b[>cf\x1b[0cg\x1b]11;?\x07h\x1b]10;?\x1b\\i\x1b[?1$pj\x1b[14tk\x1bP$qm\x1b\\l';
    expect(withoutQueries(Buffer.from(text, 'latin1')).toString('latin1')).to.equal('abcdefghijkl');
    const kept = 'colour \x1b[1;32mgreen\x1b[0m, cursor \x1b[9;7H, answer-like 9;7R, title \x1b]0;hi\x07';
    expect(withoutQueries(Buffer.from(kept)).toString()).to.equal(kept);
  });
});

describe('the tiny guest', () => {
  it('should print no test marker unless it is the test guest', () => {
    expect(tinyInit({ hostname: 'tiny', prompt: 'tiny# ' })).not.to.match(/SKYGUEST|READY/);
    expect(tinyInit({ hostname: 'skyguest', prompt: 'skyguest# ', readyMarker: GUEST_READY })).to.include(`echo ${GUEST_READY}`);
  });
});
