// The command framework of the `skyhost` executable: commands declare their flags once; parsing,
// `--help`, config loading and exit codes (0 ok, 1 failed, 2 usage or config error) live here.
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type Config, type ConfigKey } from './config.ts';
import { SkyError } from './errors.ts';
import { configureLogging, logger, type Logger } from './log.ts';
import { VERSION } from './version.ts';

export interface FlagSpec {
  type: 'string' | 'boolean';
  help: string;
  /** The config key this flag sets (it then wins over env, file and default). */
  key?: ConfigKey;
  /** Placeholder in help, e.g. DIR. */
  arg?: string;
  multiple?: boolean;
}

export interface CommandContext {
  config: Config;
  /** Positional arguments after the command's name. */
  args: string[];
  /** Every flag as given (strings, booleans, or string lists for `multiple`). */
  flags: Record<string, string | boolean | string[] | undefined>;
  log: Logger;
  /** Writes a line for the user to stdout. */
  print: (line: string) => void;
}

export interface Command {
  /** One or more words: `up`, `template import`. */
  name: string;
  summary: string;
  /** Positional synopsis shown in help, e.g. `NAME --disk FILE`. */
  usage?: string;
  /** Longer help text shown by `skyhost CMD --help`. */
  description?: string;
  flags?: Record<string, FlagSpec>;
  /** Resolves to the exit code (default 0). Long-running services resolve when they stop. */
  run(ctx: CommandContext): Promise<number | void>;
}

/** Thrown for a wrong invocation: printed as one line, exit code 2. */
export class UsageError extends Error {}

const COMMON_FLAGS: Record<string, FlagSpec> = {
  config: { type: 'string', arg: 'FILE', help: 'read this config file instead of /etc/skyhost/config.yaml' },
  'log-level': { type: 'string', arg: 'LEVEL', key: 'logLevel', help: 'debug, info, warn or error' },
  help: { type: 'boolean', help: 'show this help' },
};

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  stdout?: (s: string) => void;
  stderr?: (s: string) => void;
}

/** Runs `skyhost ARGV...` and resolves to the process exit code. */
export async function runCli(commands: Command[], argv: string[], opts: RunOptions = {}): Promise<number> {
  const out = opts.stdout ?? ((s: string) => void process.stdout.write(s));
  const err = opts.stderr ?? ((s: string) => void process.stderr.write(s));
  try {
    if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
      out(mainHelp(commands));
      return argv.length === 0 ? 2 : 0;
    }
    if (argv[0] === '--version' || argv[0] === '-v' || argv[0] === 'version') {
      out(`skyhost ${VERSION}\n`);
      return 0;
    }
    const { command, rest } = findCommand(commands, argv);
    const specs = { ...COMMON_FLAGS, ...command.flags };
    const parsed = parseFlags(command, specs, rest);
    if (parsed.values.help) {
      out(commandHelp(command, specs));
      return 0;
    }
    const flagKeys: Partial<Record<ConfigKey, unknown>> = {};
    const flagNames: Partial<Record<ConfigKey, string>> = {};
    for (const [name, spec] of Object.entries(specs)) {
      const value = parsed.values[name];
      if (spec.key && value !== undefined) {
        flagKeys[spec.key] = value;
        flagNames[spec.key] = `--${name}`;
      }
    }
    const configFile = typeof parsed.values.config === 'string' ? parsed.values.config : undefined;
    const { config } = loadConfig({
      flags: flagKeys,
      flagNames,
      ...(configFile ? { configFile } : {}),
      ...(opts.env ? { env: opts.env } : {}),
    });
    configureLogging({ level: config.logLevel, ...(config.logFormat ? { format: config.logFormat } : {}) });
    const code = await command.run({
      config,
      args: parsed.positionals,
      flags: parsed.values as CommandContext["flags"],
      log: logger(command.name.split(' ')[0]!),
      print: (line) => out(line + '\n'),
    });
    return code ?? 0;
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError) {
      err(`skyhost: ${e.message}\n`);
      return 2;
    }
    if (e instanceof SkyError) {
      err(`skyhost: ${e.message}\n`);
      return e.status >= 400 && e.status < 500 ? 2 : 1;
    }
    err(`skyhost: unexpected error: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}

function findCommand(commands: Command[], argv: string[]): { command: Command; rest: string[] } {
  const words: string[] = [];
  for (const a of argv) {
    if (a.startsWith('-')) break;
    words.push(a);
  }
  for (let n = words.length; n > 0; n--) {
    const name = words.slice(0, n).join(' ');
    const command = commands.find((c) => c.name === name);
    if (command) return { command, rest: argv.slice(n) };
  }
  const group = commands.filter((c) => c.name.startsWith((words[0] ?? '') + ' '));
  if (group.length > 0) {
    throw new UsageError(
      `"${words.join(' ')}" needs a subcommand: ${group.map((c) => c.name).join(', ')} (see skyhost --help)`,
    );
  }
  throw new UsageError(`unknown command "${argv[0]}" (see skyhost --help)`);
}

function parseFlags(command: Command, specs: Record<string, FlagSpec>, rest: string[]) {
  try {
    return parseArgs({
      args: rest,
      options: Object.fromEntries(
        Object.entries(specs).map(([name, s]) => [name, { type: s.type, ...(s.multiple ? { multiple: true } : {}) }]),
      ),
      strict: true,
      allowPositionals: true,
    });
  } catch (e) {
    const msg = (e as Error).message.replace(/\. To specify a positional.*$/s, '').split('\n')[0];
    throw new UsageError(`${command.name}: ${msg} (see skyhost ${command.name} --help)`);
  }
}

export function mainHelp(commands: Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  const lines = commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`);
  return [
    `skyhost ${VERSION}: turn a room of PCs into one VM cluster`,
    '',
    'Usage: skyhost COMMAND [options]',
    '',
    'Commands:',
    ...lines,
    '',
    'skyhost COMMAND --help shows a command\'s options. skyhost --version prints the version.',
    'Configuration: flags > SKYHOST_* environment > /etc/skyhost/config.yaml (or --config FILE) > defaults.',
    '',
  ].join('\n');
}

export function commandHelp(command: Command, specs: Record<string, FlagSpec>): string {
  const flagLines = Object.entries(specs).map(([name, s]) => {
    const left = `--${name}${s.type === 'string' ? ' ' + (s.arg ?? 'VALUE') : ''}`;
    return `  ${left.padEnd(28)}${s.help}`;
  });
  return [
    `Usage: skyhost ${command.name}${command.usage ? ' ' + command.usage : ''} [options]`,
    '',
    command.summary,
    ...(command.description ? ['', command.description] : []),
    '',
    'Options:',
    ...flagLines,
    '',
  ].join('\n');
}
