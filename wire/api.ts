// The agent's wire contract (DESIGN §5): zod schemas and the types inferred from them. The agent
// validates what it receives with these; the controller imports them to talk to agents (and the
// simulated agent implements them). Change only by adding.
import { z } from 'zod';

/** A VM's name: what a person types and sees. No shell, path or markup characters. */
export const VmName = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be 1-63 lowercase letters, digits or "-", not starting or ending with "-"');

/** SkyHost's id of a VM (the controller chooses it; the agent makes one when called directly). */
export const VmId = z.string().regex(/^[a-z0-9]{8,32}$/, 'must be 8-32 lowercase letters or digits');

export const TemplateName = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/, 'must be 1-63 lowercase letters, digits, ".", "_" or "-"');

/** One OpenSSH public key on one line. */
export const SshPublicKey = z
  .string()
  .max(16384)
  .regex(/^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( [^\r\n]*)?$/,
    'must be one OpenSSH public key on one line (ssh-ed25519 AAAA... comment)');

export const VmState = z.enum(['creating', 'running', 'shutoff', 'paused', 'unknown', 'error', 'deleting']);
export type VmState = z.infer<typeof VmState>;

export const Hypervisor = z.enum(['kvm', 'tcg', 'none']);
export type Hypervisor = z.infer<typeof Hypervisor>;

export const ConsoleKind = z.enum(['serial', 'vnc']);

/** A template present on a host. */
export const TemplateInfo = z.object({
  name: TemplateName,
  /** `disk`: a bootable qcow2/raw image; `kernel`: direct kernel boot (kernel + initrd [+ disk]). */
  kind: z.enum(['disk', 'kernel']),
  /** e.g. "alpine", "debian", "ubuntu-desktop". */
  os: z.string().max(64),
  description: z.string().max(500).optional(),
  minMemoryMiB: z.number().int().min(16),
  /** The console a person uses: serial text or a graphical (VNC) screen. */
  console: ConsoleKind,
  /** A desktop template is too slow without KVM: hosts on TCG refuse it. */
  needsKvm: z.boolean(),
  files: z.array(z.object({
    role: z.enum(['disk', 'kernel', 'initrd']),
    file: z.string(),
    bytes: z.number().int(),
    sha256: z.string().length(64),
    /** A disk's image format. */
    format: z.enum(['qcow2', 'raw']).optional(),
    /** A disk's size as the guest sees it. */
    virtualBytes: z.number().int().optional(),
  })),
  cmdline: z.string().max(2048).optional(),
  createdAt: z.string(),
});
export type TemplateInfo = z.infer<typeof TemplateInfo>;

/** What a VM request asks a host for (`POST /vms`; `POST /start-vm` takes the same). */
export const VmCreateRequest = z.strictObject({
  id: VmId.optional(),
  name: VmName,
  template: TemplateName,
  vcpus: z.number().int().min(1).max(64).default(1),
  memoryMiB: z.number().int().min(32).max(262144).default(256),
  /** Size of the VM's disk; the overlay grows up to this. Default: the template's own size. */
  diskGiB: z.number().int().min(1).max(4096).optional(),
  sshKey: SshPublicKey.optional(),
  /** Extra cloud-init user-data (#cloud-config YAML) merged into the seed. */
  userData: z.string().max(65536).optional(),
  /** Who asked for it (a controller user name); kept in the VM's metadata. */
  owner: z.string().regex(/^[a-z0-9_.-]{1,64}$/i, 'must be 1-64 letters, digits, ".", "_" or "-"').optional(),
  expiresAt: z.iso.datetime().optional(),
});
export type VmCreateRequest = z.input<typeof VmCreateRequest>;
export type VmCreate = z.output<typeof VmCreateRequest>;

/** A VM as the agent reports it. */
export const VmInfo = z.object({
  id: VmId,
  name: VmName,
  owner: z.string().optional(),
  template: TemplateName,
  state: VmState,
  vcpus: z.number().int(),
  memoryMiB: z.number().int(),
  diskGiB: z.number().optional(),
  mac: z.string().optional(),
  ip: z.string().optional(),
  /** SSH from the LAN: `ssh -p PORT user@HOST`. */
  ssh: z.object({ host: z.string(), port: z.number().int(), command: z.string() }).optional(),
  console: ConsoleKind,
  hypervisor: Hypervisor.optional(),
  createdAt: z.string(),
  expiresAt: z.string().optional(),
  /** Why the VM is in `error`. */
  error: z.string().optional(),
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

/** Description of a template being imported (`POST /templates`, CLI `template import`). */
export const TemplateImportRequest = z.strictObject({
  name: TemplateName,
  /** Where the agent downloads the disk image (http or https), checked against `sha256`. */
  url: z.url({ protocol: /^https?$/ }).optional(),
  /** sha256 of the disk image (required with `url`). */
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits').optional(),
  os: z.string().regex(/^[A-Za-z0-9._ -]{1,64}$/, 'must be 1-64 letters, digits, spaces, ".", "_" or "-"').optional(),
  description: z.string().max(500).optional(),
  minMemoryMiB: z.number().int().min(16).max(262144).optional(),
  console: ConsoleKind.optional(),
  needsKvm: z.boolean().optional(),
});
export type TemplateImportRequest = z.infer<typeof TemplateImportRequest>;

/** `GET /status`: the original design's CPU, RAM and VM count, and what a scheduler needs. */
export const HostStatus = z.object({
  hostId: z.string(),
  hostname: z.string(),
  version: z.string(),
  cpu: z.object({ model: z.string(), cores: z.number().int(), threads: z.number().int(), loadPct: z.number(), load1: z.number() }),
  memory: z.object({ totalMiB: z.number().int(), freeMiB: z.number().int(), usedByVmsMiB: z.number().int() }),
  disk: z.object({ path: z.string(), totalGiB: z.number(), freeGiB: z.number() }),
  gpus: z.array(z.object({ vendor: z.string(), model: z.string(), vramMiB: z.number().optional() })),
  vms: z.object({ running: z.number().int(), total: z.number().int(), vcpus: z.number().int() }),
  hypervisor: Hypervisor,
  hypervisorReason: z.string().optional(),
  libvirtVersion: z.string().optional(),
  qemuVersion: z.string().optional(),
  templates: z.array(TemplateInfo),
  /** Every VM this agent owns: the controller reconciles its records with this list. */
  vmList: z.array(VmInfo),
  /** Discovery state: which controller this agent belongs to, or why it has none. */
  controller: z.object({ url: z.string().optional(), clusterId: z.string().optional(), state: z.string(), message: z.string().optional() }).optional(),
  uptimeS: z.number(),
  sampledAt: z.string(),
});
export type HostStatus = z.infer<typeof HostStatus>;

/** `POST /api/enroll` on the controller: what an agent sends to join a cluster. */
export const EnrollRequest = z.strictObject({
  hostId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/),
  hostname: z.string().min(1).max(253),
  agentUrl: z.url(),
  agentKey: z.string().min(16).max(256),
  joinToken: z.string().min(8).max(256).optional(),
  version: z.string().max(64),
});
export type EnrollRequest = z.infer<typeof EnrollRequest>;

export const EnrollResponse = z.object({
  hostId: z.string(),
  state: z.enum(['pending', 'ready', 'down', 'draining']),
  clusterId: z.string(),
  message: z.string().optional(),
});
export type EnrollResponse = z.infer<typeof EnrollResponse>;
