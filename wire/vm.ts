// The one VM model. `VmSpec` is what a VM is asked to be (the writable part); every other shape
// embeds it and adds what only one side knows:
//
//   VmRequest        controller API body    spec (name optional) + leaseMinutes
//   VmCreateRequest  controller -> agent    spec + id, owner, expiresAt
//   VmInfo           agent -> controller    spec (as kept) + id, state, ip, ssh, ... (in /status and answers)
//   VmView           controller API answer  spec (as kept) + id, owner, host, state, consoleUrl, ...
//
// The field limits are written once, here (`VM_LIMITS`), and so is the memory rule (`effectiveMemory`).
import { z } from 'zod';
import { userDataProblem } from './cloud-init.ts';
import { ConsoleKind, TemplateName } from './template.ts';

/** The bounds of every number and text a VM request may carry (API, page and agent alike). */
export const VM_LIMITS = {
  vcpus: { min: 1, max: 64 },
  memoryMiB: { min: 32, max: 262_144 },
  diskGiB: { min: 1, max: 4096 },
  sshKeyChars: 16_384,
  userDataChars: 65_536,
  /** One year. */
  leaseMinutes: { min: 1, max: 525_600 },
} as const;

export const DEFAULT_VCPUS = 1;
/** Memory of a VM whose request names none (raised to the template's minimum). */
export const DEFAULT_MEMORY_MIB = 256;

/**
 * The memory a VM gets: what was asked (default 256 MiB), never below the template's minimum.
 * @example effectiveMemory(undefined, { minMemoryMiB: 2048 }) // 2048
 */
export function effectiveMemory(requestedMiB: number | undefined, template: { readonly minMemoryMiB: number } | undefined): number {
  return Math.max(requestedMiB ?? DEFAULT_MEMORY_MIB, template?.minMemoryMiB ?? 0);
}

/** A VM's name: what a person types and sees. No shell, path or markup characters. */
export const VmName = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be 1-63 lowercase letters, digits or "-", not starting or ending with "-"');

/** SkyHost's id of a VM (the controller chooses it; the agent makes one when called directly). */
export const VmId = z.string().regex(/^[a-z0-9]{8,32}$/, 'must be 8-32 lowercase letters or digits');

/** One OpenSSH public key on one line. */
export const SshPublicKey = z
  .string()
  .max(VM_LIMITS.sshKeyChars)
  .regex(/^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( [^\r\n]*)?$/,
    'must be one OpenSSH public key on one line (ssh-ed25519 AAAA... comment)');

/** A controller user name as an agent keeps it in the VM's metadata. */
export const VmOwner = z.string().regex(/^[a-z0-9_.-]{1,64}$/i, 'must be 1-64 letters, digits, ".", "_" or "-"');

export const VmState = z.enum(['creating', 'running', 'shutoff', 'paused', 'unknown', 'error', 'deleting']);
export type VmState = z.infer<typeof VmState>;

/** How a host runs VMs: KVM, QEMU in software (TCG), or not at all. */
export const Hypervisor = z.enum(['kvm', 'tcg', 'none']);
export type Hypervisor = z.infer<typeof Hypervisor>;

/** What a VM is asked to be: the writable part that every VM shape embeds. */
export const VmSpec = z.strictObject({
  /** Unique in the cluster, e.g. `web-1`. */
  name: VmName,
  /** The template it starts from, e.g. `alpine`. */
  template: TemplateName,
  /** Virtual CPUs, e.g. `2`. */
  vcpus: z.number().int().min(VM_LIMITS.vcpus.min).max(VM_LIMITS.vcpus.max),
  /** Memory in MiB, e.g. `1024`; never below the template's minimum (see `effectiveMemory`). */
  memoryMiB: z.number().int().min(VM_LIMITS.memoryMiB.min).max(VM_LIMITS.memoryMiB.max),
  /** Disk size in GiB, e.g. `20`: the overlay grows up to this. Default: the template's own size. */
  diskGiB: z.number().int().min(VM_LIMITS.diskGiB.min).max(VM_LIMITS.diskGiB.max).optional(),
  /** Write-only: the default user's key, e.g. `ssh-ed25519 AAAAC3Nz... alice@laptop`. */
  sshKey: SshPublicKey.optional(),
  /** Write-only: extra cloud-init user-data merged into the seed, e.g. `#cloud-config\npackages: [git]`. */
  userData: z.string().max(VM_LIMITS.userDataChars).superRefine((text, ctx) => {
    const problem = userDataProblem(text);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  }).optional(),
});
export type VmSpec = z.infer<typeof VmSpec>;

/** The spec as it is kept and reported: everything but the write-only key and user-data. */
const { sshKey: _sshKey, userData: _userData, ...keptSpec } = VmSpec.shape;

/** `ssh -p PORT user@HOST` from the LAN. */
export const SshAccess = z.object({
  /** e.g. `10.0.0.12` */
  host: z.string(),
  /** e.g. `22014` */
  port: z.number().int(),
  /** e.g. `ssh -p 22014 skyhost@10.0.0.12` */
  command: z.string(),
  /** The user made for the request's SSH key, e.g. `sky` (absent: no key was given, so no one can log in with one). */
  user: z.string().optional(),
});
export type SshAccess = z.infer<typeof SshAccess>;

// ---- controller <-> agent ----

/** What the controller asks a host for (`POST /vms`; `POST /start-vm` takes the same). */
export const VmCreateRequest = VmSpec.extend({
  /** Chosen by the controller, e.g. `k3x9a8b2c4d6`; the agent makes one when called directly. */
  id: VmId.optional(),
  vcpus: VmSpec.shape.vcpus.default(DEFAULT_VCPUS),
  memoryMiB: VmSpec.shape.memoryMiB.default(DEFAULT_MEMORY_MIB),
  /** Who asked for it (a controller user name), kept in the VM's metadata, e.g. `alice`. */
  owner: VmOwner.optional(),
  /** When the lease runs out, e.g. `2025-06-30T12:00:00.000Z`. */
  expiresAt: z.iso.datetime().optional(),
});
export type VmCreateRequest = z.input<typeof VmCreateRequest>;
export type VmCreate = z.output<typeof VmCreateRequest>;

/** A VM as the agent reports it (in `/status` and in answers to creates and actions). */
export const VmInfo = z.object({
  id: VmId,
  ...keptSpec,
  /** The disk's size as the host measures it, e.g. `2.5`: a report, so not bounded like a request (one odd VM must not fail a whole poll). */
  diskGiB: z.number().positive().optional(),
  /** The owner in the VM's metadata: shown to nobody, the controller's record says who owns a VM. */
  owner: z.string().optional(),
  state: VmState,
  mac: z.string().optional(),
  ip: z.string().optional(),
  ssh: SshAccess.optional(),
  console: ConsoleKind,
  hypervisor: Hypervisor.optional(),
  createdAt: z.string(),
  expiresAt: z.string().optional(),
  /** Why the VM is in `error`. */
  error: z.string().optional(),
  /**
   * What a running VM uses now, when its hypervisor says: `cpuRatio` its vCPUs' busy share since the
   * agent's previous sample (0..1, e.g. `0.35`), `memoryUsedMiB` the memory it takes on the host.
   */
  usage: z.object({ cpuRatio: z.number().min(0).optional(), memoryUsedMiB: z.number().min(0).optional() }).optional(),
});
export type VmInfo = z.infer<typeof VmInfo>;

export const VmAction = z.enum(['start', 'shutdown', 'poweroff', 'reboot']);
export type VmAction = z.infer<typeof VmAction>;

/** Body of `POST /vms/:id/<action>` (optional). */
export const VmActionRequest = z.strictObject({
  /** shutdown: how long to wait for the guest to power off after the ACPI request (default 60). */
  timeoutSeconds: z.number().int().min(1).max(600).optional(),
});
export type VmActionRequest = z.infer<typeof VmActionRequest>;

/** Body of `POST /vms/:id/save-as-template` (agent) and `POST /api/vms/:id/save-as-template` (controller). */
export const VmSaveAsTemplateRequest = z.strictObject({
  /** The new template's name, e.g. `lesson-3`: free on the host, never a path. */
  name: TemplateName,
  /** e.g. "Alpine with the lesson's packages" */
  description: z.string().max(500).optional(),
  /** Default: the source template's, e.g. "alpine". */
  os: z.string().regex(/^[A-Za-z0-9._ -]{1,64}$/, 'must be 1-64 letters, digits, spaces, ".", "_" or "-"').optional(),
});
export type VmSaveAsTemplateRequest = z.infer<typeof VmSaveAsTemplateRequest>;

// ---- the controller's JSON API ----

/** `POST /api/vms` and `POST /request-vm`. */
export const VmRequest = VmSpec.extend({
  /** Default: the template's name and four random characters, e.g. `alpine-k3x9`. */
  name: VmName.optional(),
  vcpus: VmSpec.shape.vcpus.default(DEFAULT_VCPUS),
  /** Default: the template's minimum memory, at least 256. */
  memoryMiB: VmSpec.shape.memoryMiB.optional(),
  /** The VM is shut down this many minutes after creation, e.g. `90`: at most the role's maximum (GET /api/policies); default: the class's, the template's or the cluster's. */
  leaseMinutes: z.number().int().min(VM_LIMITS.leaseMinutes.min).max(VM_LIMITS.leaseMinutes.max).optional(),
});
export type VmRequest = z.input<typeof VmRequest>;

/** The `Idempotency-Key` header: a retried request with the same key returns the first answer. */
export const IdempotencyKey = z.string().regex(/^[\x21-\x7e]{1,255}$/, 'must be 1-255 visible ASCII characters');

/** A VM as the API returns it. */
export const VmView = z.object({
  /** e.g. `k3x9a8b2c4d6` */
  id: VmId,
  ...keptSpec,
  diskGiB: keptSpec.diskGiB.unwrap(),
  /** The user it belongs to, e.g. `alice`. */
  owner: z.string(),
  /** The host's id. */
  host: z.string(),
  /** The host's name, e.g. `lab-pc-07`. */
  hostname: z.string().optional(),
  state: VmState,
  /** What a VM in `creating` waits for, e.g. `pulling 43%` (its host fetches the template first). */
  progress: z.string().optional(),
  ip: z.string().optional(),
  ssh: SshAccess.optional(),
  /**
   * The page with this VM's console, e.g. `/vms/k3x9a8b2c4d6`. Its WebSockets are
   * `/api/vms/:id/console` (serial, text) and `/api/vms/:id/vnc` (RFB for noVNC).
   */
  consoleUrl: z.string(),
  /** Which console a person uses: serial text or a graphical screen. */
  console: ConsoleKind,
  createdAt: z.string(),
  /** When its lease ends, e.g. `2025-06-30T12:00:00.000Z`: it is shut down then (POST /api/vms/{id}/extend pushes it). */
  expiresAt: z.string().optional(),
  /** When housekeeping warned that the lease ends soon (the VM page shows a banner). */
  leaseWarnedAt: z.string().optional(),
  /** When the lease ended and the VM was shut down. */
  leaseEndedAt: z.string().optional(),
  /** When a VM whose lease ended will be deleted, unless its lease is extended first. */
  deleteAt: z.string().optional(),
  /** Since when the VM is stopped (housekeeping may delete VMs stopped for long: GET /api/policies). */
  stoppedSince: z.string().optional(),
  /** Why the VM is in `error`. */
  error: z.string().optional(),
});
export type VmView = z.infer<typeof VmView>;

export const VmList = z.object({ vms: z.array(VmView) });

/** `POST /request-vm`'s answer. */
export const RequestVmAnswer = z.object({
  vm: VmView,
  host: z.object({ id: z.string(), hostname: z.string() }),
  consoleUrl: z.string(),
});

/**
 * A VM a host reports that the controller did not place there: never a record of its own (owner and
 * name never come from a host) until an admin adopts it.
 */
export const VmStranger = z.object({
  /** The id the host reports, e.g. `k3x9a8b2c4d6`. */
  id: z.string(),
  /** The host that reports it. */
  host: z.string(),
  /** What the host calls it (not a record's name). */
  name: z.string(),
  template: z.string(),
  state: VmState,
  /** Why it is a stranger, e.g. `not placed by this controller`. */
  reason: z.string(),
  /** When the controller first saw it, e.g. `2025-06-30T12:00:00.000Z`. */
  firstSeen: z.string(),
});
export type VmStranger = z.infer<typeof VmStranger>;
