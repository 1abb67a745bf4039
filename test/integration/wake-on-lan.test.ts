// A room that sleeps with the real `skyhost controller` and `skyhost agent` processes, each in its own
// network namespace on one bridge: the agent reports the MAC of its interface towards the controller;
// "Put to sleep" makes the agent run its power-off command (a file it touches here: this machine is
// never switched off) and the host `asleep`, which stays so, without alarm, while it does not answer;
// Wake sends a magic packet that a third namespace on the bridge receives on the broadcast address of
// the LAN, port 9, checked byte by byte; the agent's first answer makes the host ready again.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { ensureDaemons } from '../../host/hostsetup.ts';
import { LanProcesses, NODE, PLAIN_HTTP, plainControllerApi, TestLan, waitFor } from '../support/netns.ts';

interface HostView { id: string; state: string; mac?: string; missedPolls: number }

/** Listens on ADDRESS:9 (binding to the broadcast address: only packets sent to it arrive) and prints each as a JSON line. */
const LISTENER = `
const s = require('node:dgram').createSocket({ type: 'udp4', reuseAddr: true });
s.on('message', (m, r) => console.log(JSON.stringify({ hex: m.toString('hex'), from: r.address })));
s.bind(9, process.argv[1], () => console.log('listening'));
`;

describe('Wake-on-LAN with a real agent in a network namespace', function () {
  this.timeout(120_000);
  const lan = new TestLan();
  let tmp: string;
  let token: string;
  const procs = new LanProcesses(lan);
  const powerOffFile = () => path.join(tmp, 'powered-off');

  const { url: controllerUrl, curl, api } = plainControllerApi(lan, 'c', () => token);
  const host = async () => (await api<{ hosts: HostView[] }>('GET', '/api/hosts')).hosts.find((h) => h.id === 'id-a')!;
  const startAgent = (joinToken: string) => procs.node('a', 'appliance/main.ts', ['agent', '--host-id', 'id-a', '--data', path.join(tmp, 'a'), '--port', '8081',
    '--controller', controllerUrl(), '--join-token', joinToken], { SKYHOST_ACCEL: 'tcg', SKYHOST_POWER_OFF_COMMAND: `touch ${powerOffFile()}` });

  before(async () => {
    await ensureDaemons(); // the agent starts only with a libvirt that answers (it makes no VM here)
    tmp = mkdtempSync(path.join(os.tmpdir(), 'skyhost-wol-'));
    await lan.create();
    for (const h of ['c', 'a', 'w']) await lan.addHost(h);
    const data = path.join(tmp, 'c');
    procs.node('c', 'appliance/main.ts', ['controller', '--data', data, '--port', '8080'],
      { SKYHOST_ADVERTISE: 'false', SKYHOST_POLL_INTERVAL_SECONDS: '1', ...PLAIN_HTTP });
    await waitFor('the controller to answer', async () => procs.alive() ?? (await curl([`${controllerUrl()}/healthz`])).includes('"ok"'), 60_000, 200); // a node process on a loaded machine
    token = readFileSync(path.join(data, 'secrets', 'admin-token'), 'utf8').trim();
    startAgent(readFileSync(path.join(data, 'secrets', 'join-token'), 'utf8').trim());
  });

  afterEach(function () {
    procs.dumpIfFailed(this);
  });

  after(async () => {
    await lan.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('should have the agent report the MAC of its interface towards the controller', async () => {
    const link = JSON.parse((await lan.exec('a', 'ip', ['-j', 'link', 'show', 'eth0'])).stdout) as Array<{ address: string }>;
    const mac = link[0]!.address;
    const h = await waitFor('the host ready with its MAC', async () => {
      procs.alive();
      const h = await host().catch(() => undefined);
      return h?.state === 'ready' && h.mac ? h : undefined;
    }, 60_000, 250);
    expect(h.mac).to.equal(mac);
    // It came with the enrollment: a MAC first learnt from a /status poll would be logged as reported there.
    expect(procs.log('c')).not.to.match(/reports MAC address/);
  });

  it('should refuse POST /sleep on the agent without its key', async () => {
    const status = await curl(['-k', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', `https://${lan.host('a').ip}:8081/sleep`]);
    expect(status).to.equal('401');
    expect(existsSync(powerOffFile())).to.equal(false);
  });

  it('should put the host to sleep: the agent runs its power-off command, and the host stays asleep while it does not answer', async () => {
    const answer = await api<{ host: HostView; poweredOff: boolean }>('POST', '/api/hosts/id-a/sleep');
    expect(answer.poweredOff).to.equal(true);
    expect(answer.host.state).to.equal('asleep');
    await waitFor('the power-off command run', () => existsSync(powerOffFile()), 30_000, 100);
    // What the power-off would do: the agent is gone.
    procs.process('a').kill('SIGKILL');
    await procs.process('a');
    await waitFor('polls missed', async () => (await host()).missedPolls >= 4, 30_000, 250);
    expect((await host()).state).to.equal('asleep');
    const events = await api<{ events: Array<{ level: string; msg: string }> }>('GET', '/api/events?limit=200&level=warn');
    expect(events.events.filter((e) => /is down/.test(e.msg)), 'no "host is down" alarm').to.deep.equal([]);
  });

  it('should send the magic packet to the LAN\'s broadcast address, port 9, from the Wake of the API', async () => {
    const broadcast = `${lan.prefix}.255`;
    const listener = procs.spawn('w', NODE, ['-e', LISTENER, broadcast]);
    await waitFor('the listener bound', () => procs.alive() ?? /listening/.test(procs.log('w')), 30_000, 50); // node starting on a loaded machine
    const answer = await api<{ mac: string; address: string; port: number }>('POST', '/api/hosts/id-a/wake');
    expect(answer).to.deep.include({ address: broadcast, port: 9 });
    const line = await waitFor('the packet on the bridge', () => /\{"hex".*\}/.exec(procs.log('w'))?.[0], 30_000, 50);
    const got = JSON.parse(line) as { hex: string; from: string };
    listener.kill('SIGKILL');
    const packet = Buffer.from(got.hex, 'hex');
    const mac = (await host()).mac!.split(':').map((b) => parseInt(b, 16));
    expect(packet.length).to.equal(102);
    for (let i = 0; i < 6; i++) expect(packet[i], `byte ${i}`).to.equal(0xff);
    for (let r = 0; r < 16; r++) for (let i = 0; i < 6; i++) expect(packet[6 + r * 6 + i], `MAC ${r} byte ${i}`).to.equal(mac[i]);
    expect(got.from).to.equal(lan.host('c').ip);
  });

  it('should make the host ready at the first answer of its agent', async () => {
    startAgent(readFileSync(path.join(tmp, 'c', 'secrets', 'join-token'), 'utf8').trim());
    await waitFor('the host ready again', async () => procs.alive() ?? (await host()).state === 'ready', 60_000, 250);
  });
});
