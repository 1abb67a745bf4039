// Every subprocess SkyHost runs goes through here: an argument array (never a shell string),
// LC_ALL=C so that output parses the same everywhere, and a CommandFailed error that carries the
// command, its arguments, exit code and stderr. `run` waits for the whole output; `runStreaming`
// hands each line over as it comes (progress of apt, xorriso, a serial console).
import { execa, type Options, type Result } from 'execa';
import { CommandFailed, SkyError, Unavailable } from './errors.ts';

export interface RunOptions {
  /** Milliseconds before the process is killed (default 60 s; 0: never). */
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

function execaOptions(opts: RunOptions): Options {
  return {
    reject: false,
    timeout: opts.timeout ?? 60_000,
    env: { LC_ALL: 'C', LANG: 'C', ...opts.env },
    stripFinalNewline: true,
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' }),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  };
}

/** The error of a finished process, if it failed: missing tool, timeout, or an exit code not allowed. */
function failure(command: string, args: readonly string[], result: Result, opts: RunOptions, stderr: string): SkyError | undefined {
  if ((result as { code?: string }).code === 'ENOENT' || /ENOENT/.test(String(result.message ?? '')) && result.exitCode === undefined) {
    return new Unavailable(`${command} is not installed (run: skyhost host setup)`, { command }, 'missing_tool');
  }
  if (result.timedOut) return new CommandFailed(command, args, undefined, `timed out after ${opts.timeout ?? 60_000} ms\n${stderr}`);
  const exitCode = result.exitCode ?? -1;
  if (exitCode !== 0 && !(opts.okCodes ?? []).includes(exitCode)) return new CommandFailed(command, args, result.exitCode, stderr);
  return undefined;
}

/** Runs `command args...` and resolves with its output; rejects with CommandFailed. */
export async function run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const result = await execa(command, args, execaOptions(opts));
  const stderr = String(result.stderr ?? '');
  const failed = failure(command, args, result, opts, stderr);
  if (failed) throw failed;
  return { stdout: String(result.stdout ?? ''), stderr, exitCode: result.exitCode ?? -1 };
}

export interface StreamOptions extends RunOptions {
  /**
   * Each line of output as it arrives (lines end at \n or \r, so progress meters count). Returning
   * 'stop' ends the process at once (SIGKILL) and the run succeeds with `stopped: true`.
   */
  onLine: (line: string, stream: 'stdout' | 'stderr') => void | 'stop';
  /** Aborting kills the process; the run rejects with a 499 `cancelled`. */
  signal?: AbortSignal;
  /**
   * Runs the process in a group of its own; aborting ends the whole group (its children too): SIGTERM,
   * so that they can clean up, then SIGKILL after 3 s. The run settles once the group has ended.
   */
  processGroup?: boolean;
  /** With `processGroup`: milliseconds between SIGTERM and SIGKILL (default 3000). */
  killGraceMs?: number;
}

export interface StreamResult extends RunResult {
  /** Whether `onLine` ended the process. */
  stopped: boolean;
}

/** How much of each stream a streaming run keeps for its result and its error (the end of it). */
const KEEP_CHARS = 64 * 1024;

/** Runs `command args...` and hands each line to `onLine` as it comes; otherwise as `run`. */
export async function runStreaming(command: string, args: readonly string[], opts: StreamOptions): Promise<StreamResult> {
  const grace = opts.killGraceMs ?? 3000;
  // A process group is stopped by killGroup below, not by execa: execa's cancel stops reading the
  // output, and the last lines a leader prints as it cleans up (a template build: "stopped by SIGTERM")
  // are what the caller most needs to see.
  const child = execa(command, args, {
    ...execaOptions(opts), buffer: false,
    ...(opts.signal && !opts.processGroup ? { cancelSignal: opts.signal } : {}),
    ...(opts.processGroup ? { detached: true } : {}),
  });
  /** Sends `sig` to the child's process group; false when the group has ended. */
  const signalGroup = (sig: NodeJS.Signals | 0): boolean => {
    try {
      if (child.pid) process.kill(-child.pid, sig);
      return child.pid !== undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      return false; // the group has ended already
    }
  };
  let killTimer: NodeJS.Timeout | undefined;
  const killGroup = () => {
    signalGroup('SIGTERM');
    // a member that holds the output open keeps the run from settling: it gets SIGKILL with the rest
    killTimer = setTimeout(() => signalGroup('SIGKILL'), grace);
  };
  if (opts.processGroup) {
    opts.signal?.addEventListener('abort', killGroup, { once: true });
    if (opts.signal?.aborted) killGroup();
  }
  let stopped = false;
  const kept = { stdout: '', stderr: '' };
  const pending = { stdout: '', stderr: '' };
  const deliver = (line: string, stream: 'stdout' | 'stderr') => {
    if (stopped) return;
    if (opts.onLine(line, stream) === 'stop') {
      stopped = true;
      child.kill('SIGKILL');
      // A child of the process may still hold its output open: stop reading, do not wait for it.
      child.stdout?.destroy();
      child.stderr?.destroy();
    }
  };
  for (const stream of ['stdout', 'stderr'] as const) {
    child[stream]?.setEncoding('utf8');
    child[stream]?.on('data', (text: string) => {
      kept[stream] = (kept[stream] + text).slice(-KEEP_CHARS);
      const lines = (pending[stream] + text).split(/\r\n|[\r\n]/);
      pending[stream] = lines.pop() ?? '';
      for (const line of lines) deliver(line, stream);
    });
  }
  const result = await child.finally(() => opts.signal?.removeEventListener('abort', killGroup));
  if (opts.processGroup && opts.signal?.aborted) {
    // what the group's leader left running gets the rest of the grace to clean up, then SIGKILL
    for (let waited = 0; signalGroup(0) && waited < grace; waited += 100) await new Promise((r) => setTimeout(r, 100));
    signalGroup('SIGKILL');
    clearTimeout(killTimer);
  }
  for (const stream of ['stdout', 'stderr'] as const) if (pending[stream]) deliver(pending[stream], stream);
  const output = { stdout: kept.stdout.replace(/\n$/, ''), stderr: kept.stderr.replace(/\n$/, '') };
  if (stopped) return { ...output, exitCode: result.exitCode ?? -1, stopped };
  if (result.isCanceled || (opts.processGroup && opts.signal?.aborted)) throw new SkyError(499, 'cancelled', `${command} was cancelled`);
  const failed = failure(command, args, result, opts, output.stderr);
  if (failed) throw failed;
  return { ...output, exitCode: result.exitCode ?? -1, stopped };
}

/**
 * Runs `command args...` on this terminal (stdin, stdout and stderr are the user's: `ssh` into a VM)
 * and resolves with its exit code. The user's own locale is kept: the program talks to a person.
 */
export async function runAttached(command: string, args: readonly string[]): Promise<number> {
  const result = await execa(command, args, { reject: false, stdio: 'inherit', timeout: 0 });
  if ((result as { code?: string }).code === 'ENOENT') throw new Unavailable(`${command} is not installed`, { command }, 'missing_tool');
  return result.exitCode ?? 1;
}

/** Whether `command` can be found on PATH. */
export async function hasCommand(command: string): Promise<boolean> {
  const r = await execa('sh', ['-c', 'command -v "$1"', 'sh', command], { reject: false });
  return r.exitCode === 0;
}
