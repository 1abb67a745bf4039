// The VM shapes of the JSON API (docs/design.md#json-api): the request body and the VM as returned.
import { z } from 'zod';
import { SshPublicKey, TemplateName, VmName, VmState } from '../../wire/api.ts';

/** `POST /api/vms` and `POST /request-vm`. */
export const VmRequest = z.strictObject({
  /** Default: the template's name and a short random suffix, e.g. `alpine-k3x9`. */
  name: VmName.optional(),
  /** A template some host has, e.g. `alpine`. */
  template: TemplateName,
  vcpus: z.number().int().min(1).max(64).default(1),
  /** Default: the template's minimum memory, at least 256. */
  memoryMiB: z.number().int().min(32).max(262144).optional(),
  /** Default: the template's own disk size. */
  diskGiB: z.number().int().min(1).max(4096).optional(),
  sshKey: SshPublicKey.optional(),
  /** Extra cloud-init user-data (#cloud-config YAML). */
  userData: z.string().max(65536).optional(),
  /** The VM is deleted this many minutes after creation (max one year). */
  leaseMinutes: z.number().int().min(1).max(525600).optional(),
});
export type VmRequest = z.input<typeof VmRequest>;

/** The `Idempotency-Key` header: a retried request with the same key returns the first answer. */
export const IdempotencyKey = z.string().regex(/^[\x21-\x7e]{1,255}$/, 'must be 1-255 visible ASCII characters');

/** A VM as the API returns it. */
export const Vm = z.object({
  id: z.string(),
  name: z.string(),
  owner: z.string(),
  template: z.string(),
  /** The host's id. */
  host: z.string(),
  hostname: z.string().optional(),
  state: VmState,
  vcpus: z.number().int(),
  memoryMiB: z.number().int(),
  diskGiB: z.number(),
  ip: z.string().optional(),
  ssh: z.object({ host: z.string(), port: z.number().int(), command: z.string() }).optional(),
  /**
   * The page with this VM's console, e.g. `/vms/k3x9a8b2c4d6`. Its WebSockets are
   * `/api/vms/:id/console` (serial, text) and `/api/vms/:id/vnc` (RFB for noVNC).
   */
  consoleUrl: z.string(),
  /** Which console a person uses: serial text or a graphical screen. */
  console: z.enum(['serial', 'vnc']),
  createdAt: z.string(),
  expiresAt: z.string().optional(),
  /** Why the VM is in `error`. */
  error: z.string().optional(),
});
export type Vm = z.infer<typeof Vm>;

export const VmList = z.object({ vms: z.array(Vm) });

/** `POST /request-vm`'s answer (the original design). */
export const RequestVmAnswer = z.object({
  vm: Vm,
  host: z.object({ id: z.string(), hostname: z.string() }),
  consoleUrl: z.string(),
});
