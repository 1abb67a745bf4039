import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { ConfigError, envName, loadConfig } from '../../base/config.ts';

describe('config', () => {
  let dir: string;
  let file: string;
  const none = path.join(os.tmpdir(), 'skyhost-no-such-config.yaml');
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-config-'));
    file = path.join(dir, 'config.yaml');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function errorOf(fn: () => unknown): ConfigError {
    try {
      fn();
    } catch (e) {
      expect(e).to.be.instanceOf(ConfigError);
      return e as ConfigError;
    }
    throw new Error('expected a ConfigError');
  }

  describe('given no file, no environment and no flags', () => {
    it('should use the defaults, with the data folder by user', () => {
      const root = loadConfig({ env: {}, defaultConfigFile: none, isRoot: true, cwd: dir }).config;
      expect(root.port).to.equal(8080);
      expect(root.agentPort).to.equal(8081);
      expect(root.dataDir).to.equal('/var/lib/skyhost');
      const user = loadConfig({ env: {}, defaultConfigFile: none, isRoot: false, cwd: dir }).config;
      expect(user.dataDir).to.equal(path.join(dir, '.skyhost'));
    });
  });

  describe('given every layer sets the port', () => {
    it('should take flags over environment over file over default', () => {
      writeFileSync(file, 'port: 7000\nlogLevel: warn\nagentPort: 7001\n');
      const env = { SKYHOST_PORT: '7100', SKYHOST_AGENT_PORT: '7101' };
      const all = loadConfig({ configFile: file, env, flags: { port: 7200 }, cwd: dir }).config;
      expect(all.port).to.equal(7200);
      expect(all.agentPort).to.equal(7101);
      expect(all.logLevel).to.equal('warn');
      const noFlags = loadConfig({ configFile: file, env, cwd: dir }).config;
      expect(noFlags.port).to.equal(7100);
      const fileOnly = loadConfig({ configFile: file, env: {}, cwd: dir }).config;
      expect(fileOnly.port).to.equal(7000);
    });

    it('should read the default file only when it exists, and SKYHOST_CONFIG over it', () => {
      writeFileSync(file, 'port: 7300\n');
      expect(loadConfig({ env: {}, defaultConfigFile: file, cwd: dir }).config.port).to.equal(7300);
      expect(loadConfig({ env: {}, defaultConfigFile: none, cwd: dir }).file).to.equal(undefined);
      const other = path.join(dir, 'other.yaml');
      writeFileSync(other, 'port: 7400\n');
      expect(loadConfig({ env: { SKYHOST_CONFIG: other }, defaultConfigFile: file, cwd: dir }).config.port).to.equal(7400);
    });
  });

  describe('given a bad value', () => {
    it('should name the file key and what is allowed for a wrong type', () => {
      writeFileSync(file, 'port: "eighty"\n');
      const e = errorOf(() => loadConfig({ configFile: file, env: {}, cwd: dir }));
      expect(e.key).to.equal('port');
      expect(e.message).to.contain('"port"').and.contain(file).and.contain('1 to 65535').and.contain('"eighty"');
      expect(e.message).to.not.contain('\n');
    });

    it('should name an unknown key in the file and list the allowed ones', () => {
      writeFileSync(file, 'late-command: x\n');
      const e = errorOf(() => loadConfig({ configFile: file, env: {}, cwd: dir }));
      expect(e.message).to.match(/unknown config key "late-command"/).and.contain('dataDir');
    });

    it('should name the environment variable', () => {
      const e = errorOf(() => loadConfig({ env: { SKYHOST_LOG_LEVEL: 'loud' }, defaultConfigFile: none, cwd: dir }));
      expect(e.message).to.contain('SKYHOST_LOG_LEVEL').and.contain('debug, info, warn, error');
      const unknown = errorOf(() => loadConfig({ env: { SKYHOST_PROT: '1' }, defaultConfigFile: none, cwd: dir }));
      expect(unknown.message).to.contain('unknown environment variable SKYHOST_PROT');
    });

    it('should name the flag', () => {
      const e = errorOf(() =>
        loadConfig({ flags: { port: '99999' }, flagNames: { port: '--port' }, env: {}, defaultConfigFile: none, cwd: dir }));
      expect(e.message).to.contain('flag --port').and.contain('1 to 65535');
    });

    it('should refuse a config file that is not a mapping or not YAML', () => {
      writeFileSync(file, '- a\n- b\n');
      expect(errorOf(() => loadConfig({ configFile: file, env: {}, cwd: dir })).message).to.contain('mapping');
      writeFileSync(file, 'port: [unclosed\n');
      expect(errorOf(() => loadConfig({ configFile: file, env: {}, cwd: dir })).message).to.contain('not valid YAML');
      expect(errorOf(() => loadConfig({ configFile: path.join(dir, 'missing.yaml'), env: {}, cwd: dir })).message)
        .to.contain('cannot read config file');
    });

    it('should check cross-field rules like the SSH port range', () => {
      const e = errorOf(() => loadConfig({ env: { SKYHOST_SSH_PORT_RANGE: '30000-20000' }, defaultConfigFile: none, cwd: dir }));
      expect(e.message).to.contain('SKYHOST_SSH_PORT_RANGE');
    });
  });

  it('should coerce environment booleans and numbers', () => {
    const c = loadConfig({ env: { SKYHOST_ADVERTISE: 'no', SKYHOST_POLL_INTERVAL_SECONDS: '9' }, defaultConfigFile: none, cwd: dir }).config;
    expect(c.advertise).to.equal(false);
    expect(c.pollIntervalSeconds).to.equal(9);
  });

  it('should derive environment names from keys', () => {
    expect(envName('dataDir')).to.equal('SKYHOST_DATA_DIR');
    expect(envName('pollIntervalSeconds')).to.equal('SKYHOST_POLL_INTERVAL_SECONDS');
  });
});
