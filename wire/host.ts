// Hosts on the wire: an agent's `GET /status`, and enrollment with the controller.
import { z } from 'zod';
import { PullProgress } from './pull.ts';
import { TemplateInfo } from './template.ts';
import { Hypervisor, VmInfo } from './vm.ts';

/** A MAC address, e.g. `aa:bb:cc:dd:ee:ff` (or with `-`). */
export const MAC_ADDRESS = /^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$/i;

/** `GET /status`: CPU, RAM and VM count, and what a scheduler needs. */
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
  /** Templates being pulled from other machines, or pulled in the last minutes (absent: none). */
  pulls: z.array(PullProgress).optional(),
  /** Every VM this agent has: the controller reconciles the VMs it placed here with this list. */
  vmList: z.array(VmInfo),
  /** Discovery state: which controller this agent belongs to, or why it has none. */
  controller: z.object({ url: z.string().optional(), clusterId: z.string().optional(), state: z.string(), message: z.string().optional() }).optional(),
  uptimeS: z.number(),
  /** MAC address of the interface that reaches the controller (for Wake-on-LAN); absent when unknown. */
  mac: z.string().regex(MAC_ADDRESS).optional(),
  /** When the usage figures (CPU, memory, disk) were sampled, on the host's clock. */
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
  /** sha256 of the agent's TLS certificate (64 hex digits): the controller pins it for an https:// agentUrl. */
  certFingerprint: z.string().regex(/^[0-9a-f]{64}$/, 'must be a sha256 fingerprint: 64 lowercase hex digits').optional(),
  /** MAC address of the interface that reaches the controller, so that the controller can wake this host. */
  mac: z.string().regex(MAC_ADDRESS, 'must be a MAC address like aa:bb:cc:dd:ee:ff').optional(),
});
export type EnrollRequest = z.infer<typeof EnrollRequest>;

export const EnrollResponse = z.object({
  hostId: z.string(),
  state: z.enum(['pending', 'ready', 'down', 'draining']),
  clusterId: z.string(),
  message: z.string().optional(),
});
export type EnrollResponse = z.infer<typeof EnrollResponse>;
