// A VM's files on this machine: DATA/vms/<id>/ holds its disk (a qcow2 overlay on the template),
// its cloud-init seed ISO, and the serial console's socket and log that QEMU makes there.
import { readFileSync } from 'node:fs';
import { chmod, chown, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { createBlankDisk, createOverlay, flattenDisk } from '../../disks.ts';
import { buildSeedIso, type SeedInput } from '../../seed.ts';
import type { DiskSource } from '../driver.ts';

/** The uid/gid QEMU runs as under libvirt (libvirt-qemu on Debian/Ubuntu), if that user exists. */
function qemuOwner(): { uid: number; gid: number } | undefined {
  let passwd: string;
  try {
    passwd = readFileSync('/etc/passwd', 'utf8');
  } catch {
    return undefined; // no passwd file to read (a container): QEMU runs as whoever can reach the folder
  }
  const line = passwd.split('\n').find((l) => l.startsWith('libvirt-qemu:'));
  if (!line) return undefined;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

export class VmFiles {
  /** DATA/vms */
  readonly root: string;
  private readonly qemu = qemuOwner();

  constructor(dataDir: string) {
    this.root = path.join(dataDir, 'vms');
  }

  of(id: string) {
    const dir = path.join(this.root, id);
    return {
      dir,
      disk: path.join(dir, 'disk.qcow2'),
      /** A reset's fresh disk while it is made, and the old one kept aside until the reset is done. */
      newDisk: path.join(dir, 'disk.new.qcow2'),
      oldDisk: path.join(dir, 'disk.old.qcow2'),
      seed: path.join(dir, 'seed.iso'),
      socket: path.join(dir, 'console.sock'),
      log: path.join(dir, 'console.log'),
    };
  }

  /** DATA/vms/<id>, group libvirt-qemu, 0770: QEMU makes the console socket there. */
  async createFolder(id: string): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o711 });
    const { dir } = this.of(id);
    await mkdir(dir, { mode: 0o770 });
    if (this.qemu) await chown(dir, 0, this.qemu.gid);
    await chmod(dir, 0o770);
  }

  async createDisk(id: string, source: DiskSource, out = this.of(id).disk): Promise<void> {
    if (source.kind === 'overlay') await createOverlay(source.image, source.format, out, source.sizeBytes);
    else await createBlankDisk(out, source.sizeBytes);
  }

  async exportDisk(id: string, out: string): Promise<void> {
    await flattenDisk(this.of(id).disk, out);
  }

  /** The fresh disk is made beside the old one, then two renames swap them (the old one stays as oldDisk). */
  async replaceDisk(id: string, source: DiskSource): Promise<void> {
    const f = this.of(id);
    await rm(f.newDisk, { force: true }); // a reset cut short by a crash may have left one
    try {
      await this.createDisk(id, source, f.newDisk);
    } catch (err) {
      await rm(f.newDisk, { force: true });
      throw err;
    }
    await rename(f.disk, f.oldDisk);
    try {
      await rename(f.newDisk, f.disk);
    } catch (err) {
      await rename(f.oldDisk, f.disk);
      await rm(f.newDisk, { force: true });
      throw err;
    }
  }

  async restoreOldDisk(id: string): Promise<void> {
    const f = this.of(id);
    try {
      await rename(f.oldDisk, f.disk);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // nothing kept aside: nothing to put back
    }
  }

  async dropOldDisk(id: string): Promise<void> {
    await rm(this.of(id).oldDisk, { force: true });
  }

  async createSeed(id: string, seed: SeedInput): Promise<void> {
    await buildSeedIso(this.of(id).seed, seed);
  }

  async remove(id: string): Promise<void> {
    await rm(this.of(id).dir, { recursive: true, force: true });
  }

  /** VM ids with a folder. */
  async list(): Promise<string[]> {
    try {
      return await readdir(this.root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []; // no VM was ever made here
      throw err;
    }
  }
}

/** The last `bytes` bytes of a file (the console log); nothing if there is no log yet (the VM never started). */
export async function tailFile(file: string, bytes: number): Promise<Buffer> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0);
    throw err;
  }
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, bytes);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    return buf;
  } finally {
    await fh.close();
  }
}
