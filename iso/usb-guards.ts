// The rules that keep a teacher from wiping the wrong disk. Each is a pure predicate over what
// `lsblk` reported; `checkDrive` collects their findings, in plain words, as errors (never write) or
// warnings (write only after the user has seen them). No I/O here: usb.ts gathers the facts.

/** One block device as `lsblk -J -b -o NAME,PATH,SIZE,TYPE,TRAN,RM,HOTPLUG,RO,MODEL,SERIAL,MOUNTPOINTS,PKNAME` reports it. */
export interface Drive {
  /** Kernel name, e.g. `sdb`, `loop3`, `nvme0n1p1`. */
  name: string;
  /** Device node, e.g. `/dev/sdb`. */
  path: string;
  /** Size in bytes. */
  size: number;
  /** `disk`, `part`, `loop`, `rom`, `lvm`, `crypt`, ... */
  type: string;
  /** Transport: `usb`, `sata`, `nvme`, or null (virtual disks, loop devices). */
  transport: string | null;
  removable: boolean;
  hotplug: boolean;
  readOnly: boolean;
  model: string | null;
  serial: string | null;
  /** Where this device itself is mounted (`[SWAP]` for swap). */
  mountpoints: string[];
  /** Where it or anything inside it (partitions, LVM volumes) is mounted. */
  allMountpoints: string[];
  /** The parent's kernel name for a partition, else null. */
  parent: string | null;
}

export type FindingLevel = 'error' | 'warning';

/** What a guard found: an error means "never write here"; a warning needs the user's eyes. */
export interface Finding {
  level: FindingLevel;
  /** Stable id for tests and the UI, e.g. `system_drive`. */
  code: string;
  /** A sentence a teacher understands. */
  message: string;
}

/** Everything besides the drive itself that the guards need. */
export interface GuardContext {
  /** Bytes of the image to write. */
  imageSize: number;
  /** The mountpoint of the filesystem holding the image file (from `findmnt --target`), if known. */
  imageMountpoint?: string;
  /** Accept loop devices as if they were USB sticks (tests and benchmarks only). */
  allowLoop?: boolean;
}

/** A drive bigger than this is more likely a backup disk than a USB stick: warn. */
export const LARGE_DRIVE_BYTES = 128 * 1024 ** 3;

export function isPartition(d: Drive): boolean {
  return d.type === 'part';
}

/** The disk this computer runs from: it (or a partition or volume inside it) holds `/`, `/boot` or swap. */
export function isSystemDrive(d: Drive): boolean {
  return d.allMountpoints.some((m) => m === '/' || m === '/boot' || m === '/boot/efi' || m === '/usr' || m === '[SWAP]');
}

/** The image file lives on this drive: writing would overwrite the image while it is being read. */
export function holdsImage(d: Drive, imageMountpoint: string | undefined): boolean {
  return imageMountpoint !== undefined && d.allMountpoints.includes(imageMountpoint);
}

export function isMounted(d: Drive): boolean {
  return d.allMountpoints.length > 0;
}

export function isReadOnly(d: Drive): boolean {
  return d.readOnly;
}

/** A USB stick, an SD card or other hot-pluggable drive (a loop device only when the caller allows it). */
export function isRemovable(d: Drive, allowLoop = false): boolean {
  if (d.type === 'loop') return allowLoop;
  return d.removable || d.hotplug || d.transport === 'usb' || d.transport === 'mmc';
}

/** Whether the whole image fits: a drive exactly as large as the image is large enough. */
export function isLargeEnough(d: Drive, imageSize: number): boolean {
  return d.size >= imageSize;
}

export function isUnusuallyLarge(d: Drive): boolean {
  return d.size > LARGE_DRIVE_BYTES;
}

/** Every finding about writing an image to `d`, errors first. An empty list means "safe to write". */
export function checkDrive(d: Drive, ctx: GuardContext): Finding[] {
  const errors: Finding[] = [];
  const warnings: Finding[] = [];
  const err = (code: string, message: string) => errors.push({ level: 'error', code, message });
  if (isPartition(d)) {
    err('partition', `${d.path} is only one part (a partition) of a drive. Choose the whole drive${d.parent ? ` (/dev/${d.parent})` : ''} instead.`);
  }
  if (isSystemDrive(d)) {
    err('system_drive', `${d.path} is the disk this computer is running from. Writing to it would destroy this computer's system.`);
  }
  if (holdsImage(d, ctx.imageMountpoint)) {
    err('holds_image', `The installer image is stored on ${d.path}. Writing to it would overwrite the image while it is being copied. Copy the image to another disk first.`);
  }
  if (isMounted(d) && !isSystemDrive(d)) {
    const where = d.allMountpoints.filter((m) => m !== '[SWAP]').join(', ') || 'swap';
    err('mounted', `${d.path} is open as a folder on this computer (${where}). Eject it in the file manager (or unmount it) and try again.`);
  }
  if (isReadOnly(d)) {
    err('read_only', `${d.path} is write-protected. If the stick or SD card has a small lock switch, slide it to unlock, then plug it in again.`);
  }
  if (!isRemovable(d, ctx.allowLoop)) {
    err('not_removable', d.type === 'loop'
      ? `${d.path} is a loop device (a file posing as a disk), not a USB stick.`
      : `${d.path} is a disk built into this computer, not a USB stick. SkyHost only writes to removable drives.`);
  }
  if (!isLargeEnough(d, ctx.imageSize)) {
    err('too_small', `${d.path} is too small: it holds ${formatBytes(d.size)} but the installer needs ${formatBytes(ctx.imageSize)}. Use a bigger USB stick.`);
  }
  if (isUnusuallyLarge(d) && isRemovable(d, ctx.allowLoop)) {
    warnings.push({
      level: 'warning',
      code: 'large',
      message: `${d.path} is unusually large for a USB stick (${formatBytes(d.size)}). Make sure it is not a backup disk: everything on it will be erased.`,
    });
  }
  return [...errors, ...warnings];
}

export function hasErrors(findings: readonly Finding[]): boolean {
  return findings.some((f) => f.level === 'error');
}

/** A name a person recognises the drive by: model and size, e.g. `SanDisk Ultra (16.0 GB)`. */
export function describeDrive(d: Drive): string {
  const label = [d.model, d.serial && `serial ${d.serial}`].filter(Boolean).join(', ') || d.name;
  return `${label} (${formatBytes(d.size)})`;
}

/**
 * What the user must type to confirm a write: the model, the serial or (for devices that have
 * neither, like loop devices) the kernel name. Case and surrounding spaces do not matter.
 */
export function confirmationMatches(d: Drive, typed: string): boolean {
  const t = typed.trim().toLowerCase();
  if (!t) return false;
  const accepted = [d.model, d.serial].filter((s): s is string => !!s && s.trim() !== '').map((s) => s.trim().toLowerCase());
  if (accepted.length === 0) accepted.push(d.name.toLowerCase(), d.path.toLowerCase());
  return accepted.includes(t);
}

/** What the confirmation box asks for, e.g. `SanDisk Ultra` or `loop3`. */
export function confirmationWord(d: Drive): string {
  return d.model?.trim() || d.serial?.trim() || d.name;
}

/** 1.5 GB, 512 MB, 700 bytes: decimal units, as printed on USB sticks. */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} bytes`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  do {
    v /= 1000;
    i++;
  } while (v >= 1000 && i < units.length - 1);
  return `${v.toFixed(1)} ${units[i]}`;
}

interface LsblkNode {
  name?: unknown;
  path?: unknown;
  size?: unknown;
  type?: unknown;
  tran?: unknown;
  rm?: unknown;
  hotplug?: unknown;
  ro?: unknown;
  model?: unknown;
  serial?: unknown;
  mountpoints?: unknown;
  mountpoint?: unknown;
  pkname?: unknown;
  children?: unknown;
}

/** Parses `lsblk -J -b -o ...` output into a flat list (disks, then their partitions). */
export function parseLsblk(json: string): Drive[] {
  const data = JSON.parse(json) as { blockdevices?: LsblkNode[] };
  const out: Drive[] = [];
  const visit = (node: LsblkNode, parentName: string | null): string[] => {
    const drive = toDrive(node, parentName);
    out.push(drive);
    const children = Array.isArray(node.children) ? (node.children as LsblkNode[]) : [];
    const inner = children.flatMap((c) => visit(c, drive.name));
    drive.allMountpoints = [...new Set([...drive.mountpoints, ...inner])];
    return drive.allMountpoints;
  };
  for (const node of data.blockdevices ?? []) visit(node, null);
  return out;
}

function toDrive(n: LsblkNode, parentName: string | null): Drive {
  const str = (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? v.trim() : null);
  const bool = (v: unknown) => v === true || v === '1' || v === 1;
  const mounts = Array.isArray(n.mountpoints) ? n.mountpoints : [n.mountpoint];
  const name = str(n.name) ?? '?';
  return {
    name,
    path: str(n.path) ?? `/dev/${name}`,
    size: Number(n.size) || 0,
    type: str(n.type) ?? 'unknown',
    transport: str(n.tran),
    removable: bool(n.rm),
    hotplug: bool(n.hotplug),
    readOnly: bool(n.ro),
    model: str(n.model),
    serial: str(n.serial),
    mountpoints: mounts.filter((m): m is string => typeof m === 'string' && m !== ''),
    allMountpoints: [],
    parent: str(n.pkname) ?? (n.type === 'part' ? parentName : null),
  };
}
