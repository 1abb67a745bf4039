import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { runCli, type Command } from '../../base/cli.ts';
import { COMMANDS } from '../../appliance/commands.ts';
import { VERSION } from '../../base/version.ts';

/** Runs the CLI in-process with a clean environment and captures what it prints. */
async function cli(commands: Command[], argv: string[], env: NodeJS.ProcessEnv = {}) {
  let out = '';
  let err = '';
  const code = await runCli(commands, argv, { env, stdout: (s) => (out += s), stderr: (s) => (err += s) });
  return { code, out, err };
}

describe('cli', () => {
  let seen: { config: unknown; args: string[]; flags: Record<string, unknown> } | undefined;
  const probe: Command = {
    name: 'probe thing',
    summary: 'a test command',
    usage: 'NAME',
    flags: { port: { type: 'string', key: 'port', help: 'a port' }, loud: { type: 'boolean', help: 'be loud' } },
    async run(ctx) {
      seen = { config: ctx.config, args: ctx.args, flags: ctx.flags };
      return ctx.args[0] === 'fail' ? 1 : 0;
    },
  };
  let dir: string;
  beforeEach(() => {
    seen = undefined;
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-cli-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('should print the version', async () => {
    const r = await cli(COMMANDS, ['--version']);
    expect(r).to.include({ code: 0, out: `skyhost ${VERSION}\n` });
  });

  it('should list every command in --help, and exit 2 with help when given nothing', async () => {
    const r = await cli(COMMANDS, ['--help']);
    expect(r.code).to.equal(0);
    for (const c of COMMANDS) expect(r.out).to.contain(c.name);
    expect((await cli(COMMANDS, [])).code).to.equal(2);
  });

  it('should show a command\'s own help with its flags and the common ones', async () => {
    const r = await cli([probe], ['probe', 'thing', '--help']);
    expect(r.code).to.equal(0);
    expect(r.out).to.contain('Usage: skyhost probe thing NAME').and.contain('--port VALUE').and.contain('--log-level');
    expect(seen).to.equal(undefined);
  });

  it('should pass positionals and flags, with flags winning over the environment', async () => {
    const r = await cli([probe], ['probe', 'thing', 'alpha', '--port', '9001', '--loud'], { SKYHOST_PORT: '9000' });
    expect(r.code).to.equal(0);
    expect(seen?.args).to.deep.equal(['alpha']);
    expect(seen?.flags.loud).to.equal(true);
    expect((seen?.config as { port: number }).port).to.equal(9001);
  });

  it('should return the command\'s exit code', async () => {
    expect((await cli([probe], ['probe', 'thing', 'fail'])).code).to.equal(1);
  });

  describe('given a wrong invocation', () => {
    it('should exit 2 with one line for an unknown command', async () => {
      const r = await cli(COMMANDS, ['frobnicate']);
      expect(r.code).to.equal(2);
      expect(r.err).to.match(/^skyhost: unknown command "frobnicate"/);
      expect(r.err.trim().split('\n')).to.have.length(1);
    });

    it('should exit 2 naming an unknown flag', async () => {
      const r = await cli([probe], ['probe', 'thing', '--prot', '1']);
      expect(r.code).to.equal(2);
      expect(r.err).to.contain('--prot');
    });

    it('should ask for a subcommand of a group', async () => {
      const r = await cli([probe], ['probe']);
      expect(r.code).to.equal(2);
      expect(r.err).to.contain('probe thing');
    });

    it('should exit 2 with one line naming the key of a bad config file', async () => {
      const file = path.join(dir, 'c.yaml');
      writeFileSync(file, 'port: 8080\nlate-command: 1\n');
      const r = await cli([probe], ['probe', 'thing', '--config', file]);
      expect(r.code).to.equal(2);
      expect(r.err.trim().split('\n')).to.have.length(1);
      expect(r.err).to.contain('"late-command"');
      writeFileSync(file, 'port: abc\n');
      const t = await cli([probe], ['probe', 'thing', '--config', file]);
      expect(t.code).to.equal(2);
      expect(t.err).to.contain('"port"').and.contain('1 to 65535');
    });

    it('should exit 2 naming a bad flag value', async () => {
      const r = await cli([probe], ['probe', 'thing', '--port', 'http']);
      expect(r.code).to.equal(2);
      expect(r.err).to.contain('--port');
    });
  });
});
