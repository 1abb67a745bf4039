import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { configSchema } from '../../base/config.ts';
import { SkyError } from '../../base/errors.ts';
import { run } from '../../base/exec.ts';
import { renderConfigFile } from '../../autoinstall/config-file.ts';
import { isoFiles } from '../../autoinstall/files.ts';
import { checkSchema } from '../../autoinstall/jsonschema.ts';
import type { InstallerOptionsInput } from '../../autoinstall/options.ts';
import { buildAutoinstall, renderUserData } from '../../autoinstall/render.ts';
import { hostnameScript, serviceUnit } from '../../autoinstall/units.ts';
import { autoinstallProblems, validateAutoinstall, validateUserData, validateUserDataFile } from '../../autoinstall/validate.ts';
import { parseInstallerOptions } from '../../autoinstall/options.ts';
import { hashPassword } from '../../autoinstall/password.ts';
import { encodeJoinString } from '../../wire/join.ts';

const EXAMPLES = path.resolve(import.meta.dirname, '../../autoinstall/examples');
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOv4Wkq9p0Y3tG4yW2bJk0m5c8iQ0x1Zr2s3t4u5v6w7 teacher@lab';
const HASH = '$6$saltsalt$QWJ0o7yS7rj7Hc9P0f3kz1Zq3wH0y8V1t2s3r4q5p6o7n8m9l0k1j2i3h4g5f6e7d8c9b0a1Z2Y3X4W5V6U7T8';

/** Fixed options per example file: the rendered text must stay byte-identical (a snapshot). */
const SNAPSHOTS: Record<string, InstallerOptionsInput> = {
  'valid-agent-24.04.yaml': {
    role: 'agent', hostnamePrefix: 'lab', sshKeys: [KEY], controllerUrl: 'http://controller.local:8080',
    joinToken: 'join-3f9a2c7e', proxy: 'http://proxy.school:3128', timezone: 'Europe/Paris', keyboardLayout: 'fr', locale: 'fr_FR.UTF-8',
  },
  'valid-controller-22.04.yaml': {
    role: 'controller', hostnamePrefix: 'skyctl', adminPasswordHash: HASH, mirror: 'http://mirror.school/ubuntu', release: '22.04',
  },
};

function expectRejected(options: unknown, field: string): void {
  try {
    renderUserData(options as InstallerOptionsInput);
  } catch (e) {
    expect(e).to.be.instanceOf(SkyError);
    expect((e as SkyError).status).to.equal(422);
    expect((e as SkyError).message).to.contain(field ? `options.${field}:` : 'options:');
    return;
  }
  expect.fail(`options.${field} = ${JSON.stringify(options)} should have been rejected`);
}

describe('autoinstall model', () => {
  describe('given the snapshot options', () => {
    for (const [file, options] of Object.entries(SNAPSHOTS)) {
      it(`should render exactly examples/${file}`, () => {
        const text = renderUserData(options);
        if (process.env.UPDATE_SNAPSHOTS) writeFileSync(path.join(EXAMPLES, file), text);
        expect(text).to.equal(readFileSync(path.join(EXAMPLES, file), 'utf8'));
        expect(() => validateUserDataFile(path.join(EXAMPLES, file))).not.to.throw();
      });
    }
  });

  describe('given a role', () => {
    it('should install the VM packages on both roles and Avahi only on the controller', () => {
      const agent = buildAutoinstall(parseInstallerOptions({ role: 'agent' }));
      const controller = buildAutoinstall(parseInstallerOptions({ role: 'controller' }));
      for (const doc of [agent, controller]) {
        expect(doc.packages).to.include.members(['qemu-system-x86', 'qemu-utils', 'libvirt-daemon-system', 'libvirt-clients']);
      }
      expect(agent.packages).not.to.include('avahi-daemon');
      expect(controller.packages).to.include('avahi-daemon');
      expect(JSON.stringify(controller['late-commands'])).to.contain('avahi-daemon.service');
    });

    it('should copy the binary and config from /cdrom/skyhost into /target and enable the role\'s unit', () => {
      const commands = buildAutoinstall(parseInstallerOptions({ role: 'agent' }))['late-commands'] as string[][];
      const flat = commands.map((c) => c.join(' '));
      expect(flat).to.include('install -D -m 0755 /cdrom/skyhost/skyhost /target/usr/local/bin/skyhost');
      expect(flat).to.include('install -D -m 0644 /cdrom/skyhost/config.yaml /target/etc/skyhost/config.yaml');
      expect(flat.at(-1)).to.equal('curtin in-target --target=/target -- systemctl enable skyhost-hostname.service skyhost-agent.service');
      for (const c of commands) expect(c).to.be.an('array', 'every late-command is an argument list, never a shell string');
    });

    it('should put each ISO file the late-commands copy on the ISO', () => {
      const files = isoFiles({ role: 'controller', sshKeys: [KEY] });
      const commands = buildAutoinstall(parseInstallerOptions({ role: 'controller', sshKeys: [KEY] }))['late-commands'] as string[][];
      const fromCdrom = commands.flatMap((c) => c.filter((a) => a.startsWith('/cdrom/')).map((a) => a.slice('/cdrom'.length)));
      for (const f of fromCdrom) expect(f === '/skyhost/skyhost' || files.has(f), f).to.equal(true);
      expect(files.get('/skyhost/sudoers')).to.equal('skyhost ALL=(ALL) NOPASSWD:ALL\n');
    });

    it('should install the join token only into a root-only file, never into a world-readable one', () => {
      const o = { role: 'agent' as const, controllerUrl: 'http://c.local:8080', joinToken: 'join-3f9a2c7e' };
      const files = isoFiles(o);
      expect(files.get('/skyhost/join-token')).to.equal('join-3f9a2c7e\n');
      for (const [name, text] of files) if (name !== '/skyhost/join-token') expect(text, name).not.to.contain('join-3f9a2c7e');
      const flat = (buildAutoinstall(parseInstallerOptions(o))['late-commands'] as string[][]).map((c) => c.join(' '));
      expect(flat).to.include('install -D -m 0600 /cdrom/skyhost/join-token /target/etc/skyhost/join-token');
      expect(flat.filter((c) => c.includes('join-token'))).to.have.length(1);
      // A join string (token, controller addresses, certificate fingerprint) goes the same way, whole.
      const join = encodeJoinString({ addresses: ['https://10.0.0.5:8443'], fingerprint: 'a'.repeat(64), token: 'shs_0123456789ab_' + 'x'.repeat(32) });
      expect(isoFiles({ role: 'agent', controllerUrl: 'https://10.0.0.5:8443', joinToken: join }).get('/skyhost/join-token')).to.equal(join + '\n');
      // Without a token there is no token file and nothing copies one.
      expect(isoFiles({ role: 'agent' }).has('/skyhost/join-token')).to.equal(false);
      expect(JSON.stringify(buildAutoinstall(parseInstallerOptions({ role: 'agent' }))['late-commands'])).not.to.contain('join-token');
    });
  });

  describe('given the Ubuntu release', () => {
    it('should use sizing-policy all on 24.04 only (22.04 does not know it)', () => {
      const storage = (release: '22.04' | '24.04') => buildAutoinstall(parseInstallerOptions({ role: 'agent', release })).storage;
      expect(storage('24.04')).to.deep.equal({ layout: { name: 'lvm', match: { size: 'largest' }, 'sizing-policy': 'all' } });
      expect(storage('22.04')).to.deep.equal({ layout: { name: 'lvm', match: { size: 'largest' } } });
    });
  });

  describe('given admin credentials', () => {
    it('should disable password SSH login when a key is given and lock the password when no hash is given', () => {
      const doc = buildAutoinstall(parseInstallerOptions({ role: 'agent', sshKeys: [KEY] }));
      expect(doc.ssh).to.deep.equal({ 'install-server': true, 'authorized-keys': [KEY], 'allow-pw': false });
      expect((doc.identity as { password: string }).password).to.equal('!');
    });

    it('should hash a typed password into what adminPasswordHash accepts, reading it on stdin', async () => {
      const hash = await hashPassword('correct horse battery');
      expect(hash).to.match(/^\$6\$/);
      expect(parseInstallerOptions({ role: 'agent', adminPasswordHash: hash }).adminPasswordHash).to.equal(hash);
      const { stdout } = await run('openssl', ['passwd', '-6', '-salt', hash.split('$')[2]!, '-stdin'], { input: 'correct horse battery\n' });
      expect(stdout.trim()).to.equal(hash);
      for (const bad of ['short', 'a'.repeat(129), 'two\nlines!!']) {
        try {
          await hashPassword(bad);
          expect.fail(`${JSON.stringify(bad)} accepted`);
        } catch (e) {
          expect((e as SkyError).message).to.match(/^adminPassword: /);
        }
      }
    });

    it('should warn loudly that the disk is wiped', () => {
      expect(renderUserData({ role: 'agent' })).to.contain('ERASES THE LARGEST DISK');
    });
  });

  describe('given hostile options', () => {
    it('should reject a hostname prefix with spaces, upper case, a dot or shell syntax', () => {
      for (const bad of ['lab pc', 'Lab', 'lab.school', 'lab;reboot', '-lab', 'a'.repeat(41), '']) expectRejected({ role: 'agent', hostnamePrefix: bad }, 'hostnamePrefix');
    });

    it('should reject an SSH key with a newline (a second line would be a second key or YAML)', () => {
      expectRejected({ role: 'agent', sshKeys: [`${KEY}\nssh-ed25519 AAAAEVIL attacker`] }, 'sshKeys.0');
      expectRejected({ role: 'agent', sshKeys: [`${KEY}\n  late-commands: [reboot]`] }, 'sshKeys.0');
      expectRejected({ role: 'agent', sshKeys: ['not a key'] }, 'sshKeys.0');
    });

    it('should reject a plain password where a crypt hash is expected', () => {
      expectRejected({ role: 'agent', adminPasswordHash: 'secret123' }, 'adminPasswordHash');
      expectRejected({ role: 'agent', adminPasswordHash: `${HASH}\nshutdown: reboot` }, 'adminPasswordHash');
    });

    it('should reject URLs, tokens, users and locales that carry quotes, newlines or other schemes', () => {
      expectRejected({ role: 'agent', controllerUrl: 'javascript:alert(1)' }, 'controllerUrl');
      expectRejected({ role: 'agent', controllerUrl: 'http://c.local:8080/\n  x: y' }, 'controllerUrl');
      expectRejected({ role: 'agent', proxy: 'http://proxy" ; rm -rf /' }, 'proxy');
      expectRejected({ role: 'agent', mirror: 'ftp://mirror/ubuntu' }, 'mirror');
      expectRejected({ role: 'agent', joinToken: 'abc def ghi' }, 'joinToken');
      expectRejected({ role: 'agent', joinToken: 'abcdefgh\nlate-commands: []' }, 'joinToken');
      expectRejected({ role: 'agent', adminUser: 'root' }, 'adminUser');
      expectRejected({ role: 'agent', adminUser: 'x y' }, 'adminUser');
      expectRejected({ role: 'agent', timezone: '../../etc/shadow' }, 'timezone');
      expectRejected({ role: 'agent', keyboardLayout: 'us\n' }, 'keyboardLayout');
      expectRejected({ role: 'agent', locale: 'en_US.UTF-8; reboot' }, 'locale');
      expectRejected({ role: 'agent', 'late-command': ['reboot'] }, '');
      expectRejected({ role: 'virus' }, 'role');
    });

    it('should escape YAML syntax in free text so that it stays one value', () => {
      for (const evil of ['x": [rm -rf /] #&a *b !!python/object', "'; late-commands: ['reboot']", '{ shutdown: reboot }', '- a - b', '%YAML 1.1 ---']) {
        const text = renderUserData({ role: 'agent', adminRealname: evil });
        const parsed = parseYaml(text) as { autoinstall: Record<string, unknown> };
        expect((parsed.autoinstall.identity as { realname: string }).realname).to.equal(evil);
        expect(Object.keys(parsed.autoinstall)).to.deep.equal(Object.keys(buildAutoinstall(parseInstallerOptions({ role: 'agent' }))));
      }
      expectRejected({ role: 'agent', adminRealname: 'a\nlate-commands: [reboot]' }, 'adminRealname');
    });
  });
});

describe('autoinstall validation', () => {
  const valid = () => buildAutoinstall(parseInstallerOptions({ role: 'agent', sshKeys: [KEY] }));

  it('should vendor Ubuntu\'s schema unmodified (md5 from its source note)', () => {
    const schema = readFileSync(path.resolve(import.meta.dirname, '../../autoinstall/schema/autoinstall-schema.json'));
    const note = readFileSync(path.resolve(import.meta.dirname, '../../autoinstall/schema/autoinstall-schema.SOURCE.txt'), 'utf8');
    expect(note).to.contain(createHash('md5').update(schema).digest('hex'));
  });

  it('should accept what the model renders for both roles and releases', () => {
    for (const role of ['agent', 'controller'] as const) {
      for (const release of ['22.04', '24.04'] as const) {
        expect(autoinstallProblems(buildAutoinstall(parseInstallerOptions({ role, release, proxy: 'http://p:3128', mirror: 'http://m/ubuntu' })))).to.deep.equal([]);
      }
    }
  });

  it('should reject, for a 22.04 ISO, what only the 24.04 installer knows', () => {
    const doc24 = buildAutoinstall(parseInstallerOptions({ role: 'agent', release: '24.04', mirror: 'http://m/ubuntu' }));
    expect(autoinstallProblems(doc24, '24.04')).to.deep.equal([]);
    expect(autoinstallProblems({ ...doc24, codecs: { install: true } }, '22.04').map((p) => `${p.section}/${p.key}`)).to.deep.equal([
      'codecs/', 'storage/layout.sizing-policy', 'apt/fallback',
    ]);
    expect(autoinstallProblems(buildAutoinstall(parseInstallerOptions({ role: 'agent', release: '22.04', mirror: 'http://m/ubuntu' })), '22.04')).to.deep.equal([]);
  });

  it('should reject an unknown top-level key such as late-command, naming it and the likely intent', () => {
    const doc = { ...valid(), 'late-command': ['reboot'] };
    expect(() => validateAutoinstall(doc)).to.throw(SkyError, /section "late-command".*did you mean "late-commands"/);
  });

  it('should name the section and the key of a schema violation', () => {
    const doc = valid();
    delete (doc.identity as Record<string, unknown>).password;
    expect(autoinstallProblems(doc)).to.deep.equal([{ section: 'identity', key: 'password', message: 'is required' }]);
    expect(() => validateAutoinstall(doc)).to.throw(/section "identity", key "password" is required/);
    const doc2 = { ...valid(), keyboard: { layout: 'us', colour: 'red' } };
    expect(autoinstallProblems(doc2)).to.deep.equal([{ section: 'keyboard', key: 'colour', message: 'is not a known key here' }]);
    expect(autoinstallProblems({ ...valid(), version: 2 })[0]).to.include({ section: 'version', message: 'must be at most 1' });
    expect(autoinstallProblems({ ...valid(), shutdown: 'halt' })[0]!.section).to.equal('shutdown');
    expect(autoinstallProblems({ ...valid(), 'late-commands': [{ run: 'x' }] })[0]).to.include({ section: 'late-commands', key: '0' });
    expect(autoinstallProblems({ ...valid(), proxy: 'not a uri' })[0]!.section).to.equal('proxy');
  });

  it('should reject the invalid example beside the valid ones, naming each problem', () => {
    try {
      validateUserDataFile(path.join(EXAMPLES, 'invalid-typos.yaml'));
      expect.fail('the invalid example passed');
    } catch (e) {
      const problems = ((e as SkyError).details as { problems: { section: string; key: string }[] }).problems;
      expect(problems.map((p) => `${p.section}/${p.key}`)).to.have.members(['identity/password', 'storage/', 'late-command/']);
    }
  });

  it('should refuse user-data without #cloud-config or without an autoinstall section', () => {
    expect(() => validateUserData('autoinstall:\n  version: 1\n')).to.throw(/#cloud-config/);
    expect(() => validateUserData('#cloud-config\nusers: []\n')).to.throw(/no "autoinstall:"/);
    expect(() => validateUserData('#cloud-config\nautoinstall: [\n')).to.throw(/not valid YAML/);
  });

  it('should check the draft-07 keywords the schema uses (oneOf, anyOf, const, pattern, type lists)', () => {
    expect(checkSchema({ oneOf: [{ type: 'string' }, { type: 'integer' }] }, 1)).to.deep.equal([]);
    expect(checkSchema({ oneOf: [{ type: 'number' }, { type: 'integer' }] }, 1)[0]!.message).to.match(/more than one/);
    expect(checkSchema({ anyOf: [{ const: 'a' }, { type: 'object' }] }, 'b')[0]!.message).to.match(/none/);
    expect(checkSchema({ type: ['string', 'null'] }, null)).to.deep.equal([]);
    expect(checkSchema({ type: 'string', pattern: '^C[1-9]+$', minLength: 3 }, 'C1')).to.have.length(1);
    expect(checkSchema({ type: 'integer' }, 1.5)[0]!.message).to.match(/integer/);
  });
});

describe('what the installer puts on each PC', () => {
  it('should write a config file the binary accepts, with the controller URL for an agent and never the join token', () => {
    const text = renderConfigFile(parseInstallerOptions({ role: 'agent', controllerUrl: 'http://c.local:8080', joinToken: 'join-3f9a2c7e' }));
    const config = configSchema.partial().parse(parseYaml(text));
    expect(config).to.deep.equal({ controllerUrl: 'http://c.local:8080' });
    expect(text).not.to.contain('join-3f9a2c7e');
    expect(configSchema.partial().parse(parseYaml(renderConfigFile(parseInstallerOptions({ role: 'agent' })))) ).to.deep.equal({});
  });

  it('should run `skyhost agent` or `skyhost controller` from the service unit', () => {
    expect(serviceUnit('agent')).to.contain('ExecStart=/usr/local/bin/skyhost agent\n').and.contain('WantedBy=multi-user.target');
    expect(serviceUnit('controller')).to.contain('ExecStart=/usr/local/bin/skyhost controller\n');
  });

  describe('given the first-boot hostname script', () => {
    let root: string;
    beforeEach(() => {
      root = mkdtempSync(path.join(tmpdir(), 'skyhost-hostname-'));
      for (const d of ['etc', 'sys/class/net/lo', 'sys/class/net/enp1s0/device']) mkdirSync(path.join(root, d), { recursive: true });
      writeFileSync(path.join(root, 'etc/hostname'), 'lab\n');
      writeFileSync(path.join(root, 'etc/hosts'), '127.0.0.1 localhost\n127.0.1.1 lab\n');
      writeFileSync(path.join(root, 'sys/class/net/lo/address'), '00:00:00:00:00:00\n');
      writeFileSync(path.join(root, 'sys/class/net/enp1s0/address'), '52:54:00:3f:9a:2c\n');
      writeFileSync(path.join(root, 'set-hostname'), hostnameScript, { mode: 0o755 });
    });
    afterEach(() => rmSync(root, { recursive: true, force: true }));

    it('should name the PC prefix + the last six hex digits of the network card, once', async () => {
      await run('sh', [path.join(root, 'set-hostname')], { env: { ROOT: root } });
      expect(readFileSync(path.join(root, 'etc/hostname'), 'utf8')).to.equal('lab-3f9a2c\n');
      expect(readFileSync(path.join(root, 'etc/hosts'), 'utf8')).to.equal('127.0.0.1 localhost\n127.0.1.1 lab-3f9a2c\n');
      expect(readFileSync(path.join(root, 'etc/cloud/cloud.cfg.d/99-skyhost-hostname.cfg'), 'utf8')).to.equal('preserve_hostname: true\n');
      await run('sh', [path.join(root, 'set-hostname')], { env: { ROOT: root } });
      expect(readFileSync(path.join(root, 'etc/hostname'), 'utf8')).to.equal('lab-3f9a2c\n');
    });
  });
});
