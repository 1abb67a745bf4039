// One agent per host id on a libvirt connection. Domains are found by the host id in their metadata,
// so a second agent started with the same id (a copied config, a test run beside a lab PC's agent)
// would adopt the first one's VMs, and each would undo the other's DHCP entries. A pid file in /run
// (gone at reboot) is claimed at start and let go at stop; a file whose process is dead is taken over.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SkyError } from '../../../base/errors.ts';
import { hostTag } from './domain.ts';

/** The claims this process holds, by file: a pid file naming us may be one we hold or one left by a stopped agent of ours. */
const held = new Set<string>();

function lockDir(): string {
  for (const dir of ['/run/skyhost', path.join(os.tmpdir(), 'skyhost-run')]) {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      return dir;
    } catch {
      // not ours to write (an agent run by hand as a user): the next place will do
    }
  }
  throw new Error('no folder to keep the host lock in (/run/skyhost, the temp folder)');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

/** Claims host `hostId` for this process; a 409 when another live agent holds it. Returns the release. */
export function claimHost(hostId: string): () => void {
  const file = path.join(lockDir(), `host-${hostTag(hostId)}.pid`);
  for (;;) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o644 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number.parseInt(readFileSync(file, 'utf8'), 10);
    const ours = pid === process.pid;
    if ((ours && held.has(file)) || (!ours && Number.isInteger(pid) && alive(pid))) {
      throw new SkyError(409, 'host_in_use', `another agent (process ${pid}) already runs as host "${hostId}" on this machine's libvirt: two agents with one host id would take each other's VMs; stop it or give this one another host id`, { pid });
    }
    rmSync(file, { force: true }); // left by an agent that is gone: take it over
  }
  held.add(file);
  return () => {
    if (!held.delete(file)) return;
    rmSync(file, { force: true });
  };
}
