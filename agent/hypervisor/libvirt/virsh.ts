// The virsh runner: everything SkyHost says to libvirt goes through `virsh -c qemu:///system` with
// argument arrays (base/exec.ts). A virsh failure about a VM becomes an answer in plain words: the
// conditions the agent knows (no such domain, not running, already running) as 404/409, anything
// else as a 502 quoting libvirt's one-line reason.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CommandFailed, NotFound, SkyError } from '../../../base/errors.ts';
import { run, type RunOptions } from '../../../base/exec.ts';
import { HypervisorFailed, VmNotRunning } from '../driver.ts';

export const LIBVIRT_URI = 'qemu:///system';

/** Runs `virsh -c qemu:///system ARGS...` and resolves with its output. */
export async function virsh(args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run('virsh', ['-c', LIBVIRT_URI, '-q', ...args], { timeout: 60_000, ...opts });
  return r.stdout;
}

/** `virsh define FILE` / `virsh net-define FILE` of an XML document (virsh reads a file, not stdin). */
export async function defineXml(command: 'define' | 'net-define', text: string): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'skyhost-xml-'));
  try {
    const file = path.join(dir, 'object.xml');
    await writeFile(file, text, { mode: 0o600 });
    await virsh([command, file]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function virshStderr(err: unknown): string | undefined {
  return err instanceof CommandFailed && err.command === 'virsh' ? err.stderr : undefined;
}

/** Whether a virsh failure says the domain does not exist. */
export function isNoDomain(err: unknown): boolean {
  return /failed to get domain|Domain not found|no domain with matching/i.test(virshStderr(err) ?? '');
}

/** Whether a virsh failure says the domain is not running. */
export function isNotRunning(err: unknown): boolean {
  return /domain is not running|not running/i.test(virshStderr(err) ?? '');
}

/** Whether a virsh failure says the network does not exist. */
export function isNoNetwork(err: unknown): boolean {
  return /failed to get network|Network not found|no network with matching/i.test(virshStderr(err) ?? '');
}

/**
 * libvirt's reason in one line: the last `error:` line virsh printed, without the prefix.
 * @example "Requested operation is not valid: domain is not running"
 */
export function libvirtReason(err: CommandFailed): string {
  const lines = err.stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const last = lines.filter((l) => l.startsWith('error:')).at(-1) ?? lines.at(-1);
  return last ? last.replace(/^error:\s*/, '') : `virsh exited with code ${err.exitCode ?? 'none (killed)'}`;
}

/**
 * A virsh failure while doing something to VM `id`, as the error the API answers.
 * @example vmError(err, 'a1b2c3d4e5f6', 'start') // 502 "libvirt could not start VM a1b2c3d4e5f6: Cannot access storage file ..."
 */
export function vmError(err: unknown, id: string, doing: string): unknown {
  if (virshStderr(err) === undefined) return err;
  if (isNoDomain(err)) return new NotFound(`VM ${id} (libvirt has no such domain)`);
  if (isNotRunning(err)) return new VmNotRunning(id, doing);
  if (/already active|already running/i.test(virshStderr(err)!)) return new SkyError(409, 'already_running', `VM ${id} is already running`);
  return new HypervisorFailed(`libvirt could not ${doing} VM ${id}: ${libvirtReason(err as CommandFailed)}`);
}
