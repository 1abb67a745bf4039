// Pictures where people look, over real HTTP against the real controller and a simulated agent (the
// real agent app over the in-memory hypervisor, whose VMs report CPU and memory): the hosts list's
// labelled bars and sparklines, a host's page with its chart and its VMs, the VM page's usage, the SSH
// line only for a template with an SSH server (and what to do without a key), and /metrics per VM.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { PageClient } from '../support/page-client.ts';
import { SimAgent, simTemplate } from '../support/sim-agent.ts';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ9Zq0mZ6dzqyZk3lG0f9w2y4b8XhQ0kK1s4X5v3mN7p alice@laptop';

describe('charts, usage and the SSH line on the pages', function () {
  this.timeout(60_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-charts-'));
  let controller: RunningController;
  let sim: SimAgent;
  let admin: PageClient;
  const vms: Record<string, string> = {};

  before(async () => {
    configureLogging({ out: () => {} });
    controller = await startController({ dataDir: dir, log: logger('charts-test'), port: 0, listen: '127.0.0.1', poll: false });
    sim = await new SimAgent({ hostname: 'lab-pc-7', templates: [simTemplate('debianish', { ssh: true }), simTemplate('busybox')] }).start();
    await sim.enroll(controller.url, controller.services.joinTokens.clusterToken());
    await controller.services.hosts.pollAll();
    const s = controller.services;
    const me = s.users.get('admin')!;
    vms.keyed = (await s.vms.create(me, { template: 'debianish', vcpus: 1, memoryMiB: 512, name: 'with-key', sshKey: KEY })).vm.id;
    vms.keyless = (await s.vms.create(me, { template: 'debianish', vcpus: 1, memoryMiB: 512, name: 'no-key' })).vm.id;
    vms.nossh = (await s.vms.create(me, { template: 'busybox', vcpus: 1, memoryMiB: 256, name: 'no-sshd' })).vm.id;
    // the agent samples its VMs' counters twice (as its status timer does): the second gives each a CPU figure
    const agentVms = sim.agentVms()!;
    const vcpusOf = (id: string) => agentVms.vms.get(id)?.metadata.vcpus;
    await agentVms.usage.sample(sim.hypervisor!, vcpusOf);
    await new Promise((r) => setTimeout(r, 200));
    await agentVms.usage.sample(sim.hypervisor!, vcpusOf);
    await s.hosts.pollAll();
    admin = new PageClient(controller.url);
    await admin.firstAdminLogin(s.secrets.adminToken, 'teacher-pass-1');
  });

  after(async () => {
    await controller?.stop();
    await sim?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('the hosts list labels its bars, draws each host\'s last hour and links to the host\'s page', async () => {
    const now = Date.now();
    controller.services.history.forget(sim.hostId); // the polls' samples: these five draw a known line
    for (let i = 0; i < 5; i++) controller.services.history.record(sim.hostId, { at: now - (4 - i) * 60_000, cpu: i / 4, memoryUsedMiB: 1000 + i * 100, memoryTotalMiB: 4000 });
    const page = await admin.get('/hosts');
    expect(page.status).to.equal(200);
    expect(page.text).to.match(/<div class="meter"><span>CPU<\/span><div class="bar[^"]*" role="img" aria-label="CPU \d+%">/);
    expect(page.text).to.match(/<div class="meter"><span>Memory<\/span>/);
    expect(page.text).to.match(/<svg class="spark"[^>]*><polyline class="mem" points="[\d.,\s]+"\/><polyline class="cpu" points="([\d.]+,[\d.]+ ){4}[\d.]+,[\d.]+"\/><\/svg>/);
    expect(page.text).to.contain(`href="/hosts/${sim.hostId}"`);
  });

  it('the dashboard\'s cards link to what they count, and its host tiles name their bars', async () => {
    const page = await admin.get('/');
    expect(page.text).to.match(/<a class="total" href="\/hosts"><b>1<\/b><span>hosts ready<\/span><\/a>/);
    expect(page.text).to.match(/<a class="total" href="\/vms"><b>3 \/ 3<\/b><span>VMs running<\/span><\/a>/);
    expect(page.text).to.match(/<li class="tile ready"><b>lab-pc-7<\/b>.*<div class="meter"><span>CPU<\/span>.*<div class="meter"><span>Memory<\/span>/);
    // a student's cards link only to what a student may open
    await controller.services.users.create({ name: 'stu', password: 'student-pass-1' });
    const student = new PageClient(controller.url);
    await student.login('stu', 'student-pass-1');
    const theirs = await student.get('/');
    expect(theirs.text).to.contain('<div class="total"><b>1</b><span>hosts ready</span></div>');
    expect(theirs.text).to.match(/<a class="total" href="\/vms">/);
  });

  it('a host\'s page charts its last hour and lists its VMs with what they use', async () => {
    const page = await admin.get(`/hosts/${sim.hostId}`);
    expect(page.status).to.equal(200);
    expect(page.text).to.contain('lab-pc-7').and.contain('<svg class="chart"').and.contain('−15 min').and.contain('now');
    expect(page.text).to.match(/<polyline class="cpu" points="[\d.]+,[\d.]+ /);
    expect(page.text).to.match(/Over the last \d+ minutes: CPU between 0% and 100%/);
    expect(page.text).to.contain(`<a href="/vms/${vms.keyed}">with-key</a>`);
    expect(page.text).to.match(/data-label="CPU now">\d+%</);
    expect((await admin.get('/hosts/no-such-host')).status).to.equal(404);
  });

  it('the VM page shows the VM\'s CPU and memory now', async () => {
    const page = await admin.get(`/vms/${vms.keyed}`);
    expect(page.text).to.contain('In use now');
    // the simulated VMs are 10% busy and take half their memory
    expect(page.text).to.match(/<span>CPU<\/span><div class="bar[^"]*" role="img" aria-label="CPU (9|10|11)%"><i style="width:(9|10|11)%"><\/i><\/div><span>(9|10|11)%<\/span>/);
    expect(page.text).to.match(/<span>Memory<\/span><div class="bar[^"]*" role="img" aria-label="memory 50% of its 512 MiB"><i style="width:50%"><\/i><\/div><span>256 MiB<\/span>/);
  });

  it('offers SSH only for a template with an SSH server, and without a key says how to get one in', async () => {
    const keyed = await admin.get(`/vms/${vms.keyed}`);
    expect(keyed.text).to.match(/<code id="ssh-cmd">ssh -p \d+ sky@[^<]+<\/code>/);
    const keyless = await admin.get(`/vms/${vms.keyless}`);
    expect(keyless.text).not.to.contain('id="ssh-cmd"');
    expect(keyless.text).to.contain('id="ssh-no-key"').and.contain('SSH key');
    const nossh = await admin.get(`/vms/${vms.nossh}`);
    expect(nossh.text).not.to.contain('<dt>SSH</dt>');
    expect(nossh.text).not.to.contain('ssh -p');
  });

  it('/metrics gives each VM its CPU and memory in use', async () => {
    const text = await (await fetch(`${controller.url}/metrics`)).text();
    expect(text).to.match(new RegExp(`skyhost_vm_cpu_ratio\\{vm="${vms.keyed}",name="with-key",host="${sim.hostId}",owner="admin"\\} [\\d.]+\\n`));
    expect(text).to.contain(`skyhost_vm_memory_used_bytes{vm="${vms.keyed}",name="with-key",host="${sim.hostId}",owner="admin"} ${256 * 1024 * 1024}\n`);
    expect(text).to.match(new RegExp(`skyhost_host_cpu_ratio\\{host="${sim.hostId}",hostname="lab-pc-7"\\} [\\d.]+\\n`));
  });
});
