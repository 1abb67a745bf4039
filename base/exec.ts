// Every subprocess SkyHost runs goes through here: an argument array (never a shell string),
// LC_ALL=C so that output parses the same everywhere, and a CommandFailed error that carries the
// command, its arguments, exit code and stderr.
import { execa, type Options } from 'execa';
import { CommandFailed, Unavailable } from './errors.ts';

export interface RunOptions {
  /** Milliseconds before the process is killed (default 60 s). */
  timeout?: number;
  input?: string | Buffer;
  cwd?: string;
  env?: Record<string, string>;
  /** Exit codes other than 0 that count as success. */
  okCodes?: number[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Runs `command args...` and resolves with its output; rejects with CommandFailed. */
export async function run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const options: Options = {
    reject: false,
    timeout: opts.timeout ?? 60_000,
    env: { LC_ALL: 'C', LANG: 'C', ...opts.env },
    stripFinalNewline: true,
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' }),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  };
  const result = await execa(command, args, options);
  if ((result as { code?: string }).code === 'ENOENT' || /ENOENT/.test(String(result.message ?? '')) && result.exitCode === undefined) {
    throw new Unavailable(`${command} is not installed (run: skyhost host setup)`, { command }, 'missing_tool');
  }
  const exitCode = result.exitCode ?? -1;
  if (result.timedOut) {
    throw new CommandFailed(command, args, undefined, `timed out after ${options.timeout} ms\n${String(result.stderr ?? '')}`);
  }
  if (exitCode !== 0 && !(opts.okCodes ?? []).includes(exitCode)) {
    throw new CommandFailed(command, args, result.exitCode, String(result.stderr ?? ''));
  }
  return { stdout: String(result.stdout ?? ''), stderr: String(result.stderr ?? ''), exitCode };
}

/** Whether `command` can be found on PATH. */
export async function hasCommand(command: string): Promise<boolean> {
  const r = await execa('sh', ['-c', 'command -v "$1"', 'sh', command], { reject: false });
  return r.exitCode === 0;
}
