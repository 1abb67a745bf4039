// Every option the docs tell people to use is in that command's `--help`: the command table of
// docs/design.md#cli, and every `skyhost COMMAND ... --flag` written in README.md and docs/*.md. The
// help is the real one (runCli), so a flag the docs name and the parser lacks fails here.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { runCli } from '../../base/cli.ts';
import { checkoutRoot } from '../../base/assets.ts';
import { COMMANDS } from '../../appliance/commands.ts';

const root = checkoutRoot();
const NAMES = COMMANDS.map((c) => c.name).sort((a, b) => b.length - a.length);

/** The command whose name starts `words` (the longest that fits), if any. */
function commandOf(words: string[]): string | undefined {
  const text = words.join(' ') + ' ';
  return NAMES.find((n) => text.startsWith(n + ' '));
}

const helps = new Map<string, string>();
async function helpOf(name: string): Promise<string> {
  let text = helps.get(name);
  if (text === undefined) {
    let out = '';
    const code = await runCli(COMMANDS, [...name.split(' '), '--help'], { stdout: (s) => { out += s; }, stderr: (s) => { out += s; } });
    expect(code, `skyhost ${name} --help: ${out}`).to.equal(0);
    text = out;
    helps.set(name, text);
  }
  return text;
}

/** `--flag` words of a piece of text (the ones that are options, not `--` alone). */
function flagsIn(text: string): string[] {
  return [...new Set([...text.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)].map((m) => m[1]!))];
}

/** The rows of the command table in docs/design.md#cli: the command and the options its row names. */
export function designTable(markdown: string): Array<{ row: string; command: string | undefined; flags: string[] }> {
  const section = markdown.split(/^## CLI$/m)[1]?.split(/^## /m)[0] ?? '';
  return section.split('\n').filter((l) => /^\| `/.test(l)).map((row) => {
    const cells = row.replace(/\\\|/g, '/').split('|').map((c) => c.trim()).filter(Boolean);
    const first = /`([^`]+)`/.exec(cells[0] ?? '')?.[1] ?? '';
    return { row, command: first.startsWith('-') ? undefined : commandOf(first.split(/\s+/)), flags: flagsIn(cells.join(' ')) };
  });
}

/** Every `skyhost WORDS ... --flag` in a markdown text (lines continued with a backslash joined). */
export function commandLines(markdown: string): Array<{ line: string; command: string; flags: string[] }> {
  const out: Array<{ line: string; command: string; flags: string[] }> = [];
  for (const line of markdown.replace(/\\\n\s*/g, ' ').split('\n')) {
    for (const m of line.matchAll(/(?:^|[\s`(])(?:dist\/)?skyhost ([^`|;&#)]*)/g)) {
      // words after a lone `--` belong to another program (e.g. ssh's options)
      const segment = m[1]!.split(/\s--(?:\s|$)/)[0]!;
      const command = commandOf(segment.trim().split(/\s+/));
      if (command) out.push({ line: line.trim(), command, flags: flagsIn(segment) });
    }
  }
  return out;
}

describe('CLI help against the docs', function () {
  this.timeout(30_000);
  const design = readFileSync(path.join(root, 'docs/design.md'), 'utf8');

  it('should list every command of the executable in docs/design.md\'s table, and every row should name a command', () => {
    const rows = designTable(design);
    expect(rows.length).to.be.greaterThan(15);
    const named = new Set(rows.map((r) => r.command));
    expect(COMMANDS.map((c) => c.name).filter((n) => !named.has(n)), 'commands missing from the table').to.deep.equal([]);
    expect(rows.filter((r) => r.command === undefined && !/^\| `-/.test(r.row)).map((r) => r.row), 'rows that name no command').to.deep.equal([]);
  });

  it('should show in each command\'s --help every option its row in docs/design.md names', async () => {
    const missing: string[] = [];
    for (const { command, flags } of designTable(design)) {
      if (!command) continue;
      const help = await helpOf(command);
      for (const f of flags) if (!help.includes(`--${f}`)) missing.push(`${command}: --${f}`);
    }
    expect(missing).to.deep.equal([]);
  });

  it('should show in --help every option that README.md and docs/*.md use with a command', async () => {
    const files = ['README.md', ...readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
    const missing: string[] = [];
    let seen = 0;
    for (const file of files) {
      for (const { line, command, flags } of commandLines(readFileSync(path.join(root, file), 'utf8'))) {
        const help = await helpOf(command);
        seen += flags.length;
        for (const f of flags) if (!help.includes(`--${f}`)) missing.push(`${file}: skyhost ${command} --${f} (in: ${line.slice(0, 120)})`);
      }
    }
    expect(seen, 'options found in the docs').to.be.greaterThan(30);
    expect(missing).to.deep.equal([]);
  });

  it('should give `up` the options a second machine\'s agent needs: its host id and SSH port range', async () => {
    const help = await helpOf('up');
    for (const f of ['--host-id', '--ssh-ports', '--data', '--port', '--agent-port']) expect(help).to.include(f);
  });

  describe('the parsers themselves', () => {
    it('should read a table row and a doc line into a command and its options', () => {
      const rows = designTable('## CLI\n\n| `usb write IMAGE DEVICE` | writes | `--yes`, `--quiet` |\n| `--version` | prints | |\n## Next\n| `up` | x | `--nope` |\n');
      expect(rows.map((r) => [r.command, r.flags])).to.deep.equal([['usb write', ['yes', 'quiet']], [undefined, ['version']]]);
      const lines = commandLines('run `sudo dist/skyhost template build tiny --busybox` then\nskyhost vm ssh web -- -o BatchMode=yes\nskyhost agent --controller URL \\\n  --join-token T\n');
      expect(lines.map((l) => [l.command, l.flags])).to.deep.equal([['template build', ['busybox']], ['vm ssh', []], ['agent', ['controller', 'join-token']]]);
    });
  });
});
