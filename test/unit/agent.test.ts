// Pure parts of the agent: XML built from escaped values, the VM metadata, states, libvirt errors, addresses,
// the seed documents, the reverter, the port forwarder on loopback, the bearer key check.
import { connect, createServer } from 'node:net';
import { expect } from 'chai';
import { parse as parseYaml } from 'yaml';
import { keyMatches } from '../../agent/app.ts';
import type { VmMetadata, VmNetwork } from '../../agent/hypervisor/driver.ts';
import { domainName, domainXml, toState, type DomainXmlSpec } from '../../agent/hypervisor/libvirt/domain.ts';
import { metadataXml, parseMetadata } from '../../agent/hypervisor/libvirt/metadata.ts';
import { networkXml, parseNetworkXml } from '../../agent/hypervisor/libvirt/network.ts';
import { libvirtReason, vmError } from '../../agent/hypervisor/libvirt/virsh.ts';
import { unxml, xml } from '../../agent/hypervisor/libvirt/xml.ts';
import { freeIp, newMac } from '../../agent/vms/addresses.ts';
import { parsePortRange, PortForwarder } from '../../agent/forwarder.ts';
import { Reverter } from '../../agent/reverter.ts';
import { metaDataDocument, parseUserData, userDataDocument } from '../../agent/seed.ts';
import { CommandFailed, SkyError } from '../../base/errors.ts';

const metadata = (over: Partial<VmMetadata> = {}): VmMetadata => ({
  hostId: 'host-1',
  dataDir: '/var/lib/skyhost',
  id: 'abcdef123456',
  name: 'web-1',
  template: 'alpine',
  vcpus: 1,
  memoryMiB: 256,
  mac: '52:54:00:00:00:01',
  ip: '10.213.1.2',
  sshPort: 20000,
  console: 'serial',
  network: 'skyhost-12345678',
  createdAt: '2026-01-01T00:00:00.000Z',
  ...over,
});

const spec = (over: Partial<DomainXmlSpec> = {}): DomainXmlSpec => ({
  name: 'sky-12345678-abcdef123456',
  accel: 'tcg',
  metadata: metadata(),
  disk: '/data/vms/abcdef123456/disk.qcow2',
  seedIso: '/data/vms/abcdef123456/seed.iso',
  consoleSocket: '/data/vms/abcdef123456/console.sock',
  consoleLog: '/data/vms/abcdef123456/console.log',
  ...over,
});

describe('agent: libvirt XML', function () {
  it('should escape the five XML characters and read them back', function () {
    const s = `<a href="x">'&'</a>`;
    expect(xml(s)).to.equal('&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;');
    expect(unxml(xml(s))).to.equal(s);
  });

  it('should carry no raw markup from a hostile value anywhere in the domain', function () {
    const evil = `x'/><disk type='file'><source file='/etc/shadow'/></disk><a b='`;
    const text = domainXml(spec({ metadata: metadata({ owner: evil, name: 'web-1' }), consoleLog: `/data/${evil}`, kernel: { kernel: '/k', cmdline: evil } }));
    expect(text).not.to.include('/etc/shadow\'/>');
    expect(text.match(/<disk /g)).to.have.length(2);
    expect(text).to.include('&apos;/&gt;&lt;disk');
  });

  it('should build a TCG domain with kernel boot, a unix serial socket with a log, and no VNC for serial templates', function () {
    const text = domainXml(spec({ kernel: { kernel: '/t/vmlinuz', initrd: '/t/initrd', cmdline: 'console=ttyS0' }, disk: undefined }));
    expect(text).to.match(/^<domain type='qemu'>/);
    expect(text).to.include('<kernel>/t/vmlinuz</kernel>').and.include('<initrd>/t/initrd</initrd>').and.include('<cmdline>console=ttyS0</cmdline>');
    expect(text).to.include("<serial type='unix'>").and.include("<source mode='bind' path='/data/vms/abcdef123456/console.sock'/>");
    expect(text).to.include("<log file='/data/vms/abcdef123456/console.log' append='on'/>");
    expect(text).not.to.include('<graphics');
    expect(text).not.to.include("device='disk'");
  });

  it('should use KVM with host CPU passthrough and VNC on loopback for graphical templates', function () {
    const text = domainXml(spec({ accel: 'kvm', metadata: metadata({ console: 'vnc' }) }));
    expect(text).to.match(/^<domain type='kvm'>/);
    expect(text).to.include("<cpu mode='host-passthrough'/>");
    expect(text).to.include("<graphics type='vnc' autoport='yes' listen='127.0.0.1'>");
  });

  it('should put an installer ISO on a read-only CD-ROM booted after the disk, instead of booting the disk alone', function () {
    const text = domainXml(spec({ installerIso: '/data/templates/alpine-iso/installer.iso' }));
    expect(text).not.to.include("<boot dev='hd'/>");
    const disk = /<disk type='file' device='disk'>[\s\S]*?<\/disk>/.exec(text)![0];
    expect(disk).to.include("<boot order='1'/>");
    const cd = /<disk type='file' device='cdrom'>(?:(?!<\/disk>)[\s\S])*installer\.iso[\s\S]*?<\/disk>/.exec(text)![0];
    expect(cd).to.include("<target dev='hdd' bus='ide'/>").and.include('<readonly/>').and.include("<boot order='2'/>");
    expect(text.match(/device='cdrom'/g), 'the seed and the installer').to.have.length(2);
    // without an installer: the disk boots as before
    expect(domainXml(spec())).to.include("<boot dev='hd'/>").and.not.include('<boot order=');
  });

  it('should keep the VM metadata in the domain and read it back, with any namespace prefix', function () {
    const m = metadata({ owner: `o'<&>`, sshUser: 'sky', expiresAt: '2026-02-01T00:00:00.000Z' });
    expect(parseMetadata(metadataXml(m))).to.deep.equal(m);
    const libvirtForm = metadataXml(m).replace(/skyhost:/g, 'sh:').replace('xmlns:skyhost', 'xmlns:sh');
    expect(parseMetadata(libvirtForm)).to.deep.equal(m);
  });

  it('should refuse metadata missing a key field', function () {
    expect(parseMetadata('<skyhost:vm><skyhost:id>x</skyhost:id></skyhost:vm>')).to.equal(undefined);
  });

  it('should name domains by host and VM id, never by user text', function () {
    expect(domainName('host-1', 'abcdef123456')).to.match(/^sky-[0-9a-f]{8}-abcdef123456$/);
    expect(domainName('host-1', 'abcdef123456')).not.to.equal(domainName('host-2', 'abcdef123456'));
  });

  it('should map virsh states to SkyHost states', function () {
    expect(toState('running')).to.equal('running');
    expect(toState('shut off')).to.equal('shutoff');
    expect(toState('paused')).to.equal('paused');
    expect(toState('in shutdown')).to.equal('running');
    expect(toState('weird')).to.equal('unknown');
  });});

describe('agent: what libvirt refuses, in plain words', function () {
  const failed = (stderr: string) => new CommandFailed('virsh', ['-c', 'qemu:///system', '-q', 'start', 'sky-12345678-abcdef123456'], 1, stderr);

  it('should take libvirt\'s last error line as the reason', function () {
    expect(libvirtReason(failed("error: Failed to start domain 'sky-1'\nerror: Cannot access storage file '/x/seed.iso': No such file or directory\n")))
      .to.equal("Cannot access storage file '/x/seed.iso': No such file or directory");
    expect(libvirtReason(failed(''))).to.match(/exited with code 1/);
  });

  it('should answer 404 for a domain libvirt does not have', function () {
    const e = vmError(failed("error: failed to get domain 'sky-1'\n"), 'abcdef123456', 'start') as SkyError;
    expect(e.status).to.equal(404);
    expect(e.message).to.include('VM abcdef123456');
  });

  it('should answer 409 not_running for a domain that is not running', function () {
    const e = vmError(failed('error: Requested operation is not valid: domain is not running\n'), 'abcdef123456', 'reboot') as SkyError;
    expect([e.status, e.code]).to.deep.equal([409, 'not_running']);
    expect(e.message).to.match(/not running/).and.to.match(/reboot/);
  });

  it('should answer 502 quoting libvirt, without the command line, for anything else', function () {
    const e = vmError(failed("error: Failed to start domain 'sky-1'\nerror: internal error: process exited while connecting to monitor: out of memory\n"), 'abcdef123456', 'start') as SkyError;
    expect([e.status, e.code]).to.deep.equal([502, 'hypervisor_failed']);
    expect(e.message).to.equal('libvirt could not start VM abcdef123456: internal error: process exited while connecting to monitor: out of memory');
    expect(e.details).to.equal(undefined);
  });

  it('should leave errors that are not virsh failures alone', function () {
    const other = new Error('boom');
    expect(vmError(other, 'abcdef123456', 'start')).to.equal(other);
  });
});

describe('agent: network', function () {
  const net: VmNetwork = { name: 'skyhost-12345678', bridge: 'skybr12345678', prefix: '10.213.7', gateway: '10.213.7.1' };

  it('should write a NAT network and read its bridge and subnet back', function () {
    const text = networkXml(net);
    expect(text).to.include("<forward mode='nat'/>");
    expect(parseNetworkXml(net.name, text)).to.deep.equal(net);
  });

  it('should hand out the lowest free address from .2 and never the gateway', function () {
    expect(freeIp(net, new Set())).to.equal('10.213.7.2');
    expect(freeIp(net, new Set(['10.213.7.2', '10.213.7.3']))).to.equal('10.213.7.4');
  });

  it('should fail clearly when the reserved addresses are used up', function () {
    const all = new Set(Array.from({ length: 198 }, (_, i) => `10.213.7.${i + 2}`));
    expect(() => freeIp(net, all)).to.throw(SkyError, /no free address/);
  });

  it('should make locally administered MACs that are not taken', function () {
    const taken = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const m = newMac(taken);
      expect(m).to.match(/^52:54:00(:[0-9a-f]{2}){3}$/);
      expect(taken.has(m)).to.equal(false);
      taken.add(m);
    }
  });
});

describe('agent: cloud-init seed documents', function () {
  it('should put the hostname and SSH key into #cloud-config with a sudo user for the key', function () {
    const doc = userDataDocument({ instanceId: 'i1', hostname: 'web-1', sshKey: 'ssh-ed25519 AAAA k', sshUser: 'sky', userData: 'packages: [htop]' });
    expect(doc.startsWith('#cloud-config\n')).to.equal(true);
    const y = parseYaml(doc);
    expect(y.hostname).to.equal('web-1');
    expect(y.packages).to.deep.equal(['htop']);
    expect(y.ssh_authorized_keys).to.deep.equal(['ssh-ed25519 AAAA k']);
    expect(y.users[0]).to.equal('default');
    expect(y.users[1]).to.include({ name: 'sky' });
  });

  it('should let SkyHost\'s hostname win over the request\'s', function () {
    expect(parseYaml(userDataDocument({ instanceId: 'i', hostname: 'a', userData: 'hostname: evil' })).hostname).to.equal('a');
  });

  it('should write meta-data with the instance id', function () {
    expect(parseYaml(metaDataDocument({ instanceId: 'i1', hostname: 'h' }))).to.deep.equal({ 'instance-id': 'i1', 'local-hostname': 'h' });
  });

  it('should refuse user-data that is not a mapping, naming userData', function () {
    for (const bad of ['- a', 'just text', 'a: [', '$(reboot)']) {
      expect(() => parseUserData(bad)).to.throw(SkyError).with.property('message').that.matches(/^userData/);
    }
    expect(parseUserData('')).to.deep.equal({});
    expect(parseUserData('# only a comment')).to.deep.equal({});
  });

  it('should refuse a YAML alias bomb', function () {
    const bomb = 'a: &a ["x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]';
    expect(() => parseUserData(bomb)).to.throw(SkyError);
  });
});

describe('agent: reverter', function () {
  it('should undo newest first and keep going when an undo fails', async function () {
    const done: string[] = [];
    const r = new Reverter();
    r.add('a', () => done.push('a'));
    r.add('b', () => {
      throw new Error('b broke');
    });
    r.add('c', async () => done.push('c'));
    await r.fail();
    expect(done).to.deep.equal(['c', 'a']);
  });

  it('should forget its steps on success', async function () {
    const done: string[] = [];
    const r = new Reverter();
    r.add('a', () => done.push('a'));
    r.success();
    await r.fail();
    expect(done).to.deep.equal([]);
  });
});

describe('agent: bearer key', function () {
  it('should accept only the exact key', function () {
    expect(keyMatches('Bearer k-0123456789abcdef', 'k-0123456789abcdef')).to.equal(true);
    expect(keyMatches('Bearer k-0123456789abcdeX', 'k-0123456789abcdef')).to.equal(false);
    expect(keyMatches('k-0123456789abcdef', 'k-0123456789abcdef')).to.equal(false);
    expect(keyMatches(undefined, 'k-0123456789abcdef')).to.equal(false);
  });
});

describe('agent: SSH port forwarder (loopback)', function () {
  it('should reserve distinct ports synchronously and fail clearly when the range is used up', function () {
    const f = new PortForwarder(parsePortRange('40000-40002'), '127.0.0.1');
    const got = [f.reserve(), f.reserve(new Set([40001])), f.reserve()];
    expect(got).to.deep.equal([40000, 40002, 40001]);
    expect(() => f.reserve()).to.throw(SkyError, /no free SSH port/);
    f.release(40001);
    expect(f.reserve()).to.equal(40001);
  });

  it('should forward bytes both ways to the target and stop on close', async function () {
    const echo = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const target = (echo.address() as { port: number }).port;
    const f = new PortForwarder({ low: 0, high: 0 }, '127.0.0.1');
    const listenOn = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const p = (probe.address() as { port: number }).port;
        probe.close(() => resolve(p));
      });
    });
    try {
      await f.open(listenOn, '127.0.0.1', target);
      const reply = await new Promise<string>((resolve, reject) => {
        const c = connect({ host: '127.0.0.1', port: listenOn }, () => c.write('ping'));
        c.on('data', (d) => {
          resolve(d.toString());
          c.destroy();
        });
        c.on('error', reject);
      });
      expect(reply).to.equal('ping');
      await f.close(listenOn);
      const refused = await new Promise<boolean>((resolve) => {
        const c = connect({ host: '127.0.0.1', port: listenOn });
        c.on('connect', () => {
          c.destroy();
          resolve(false);
        });
        c.on('error', () => resolve(true));
      });
      expect(refused).to.equal(true);
    } finally {
      await f.closeAll();
      echo.close();
    }
  });
});
