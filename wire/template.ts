// Templates on the wire: what a host reports it has, and what an import asks for.
import { z } from 'zod';

/** A template's name, e.g. `alpine` or `ubuntu-24.04`. */
export const TemplateName = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/, 'must be 1-63 lowercase letters, digits, ".", "_" or "-"');

/** The console a person uses: serial text or a graphical (VNC) screen. */
export const ConsoleKind = z.enum(['serial', 'vnc']);
export type ConsoleKind = z.infer<typeof ConsoleKind>;

/** A template present on a host. */
export const TemplateInfo = z.object({
  name: TemplateName,
  /**
   * `disk`: a bootable qcow2/raw image; `kernel`: direct kernel boot (kernel + initrd [+ disk]);
   * `iso`: an installer ISO, the VM gets an empty disk of the size asked for and boots the ISO from a CD-ROM.
   */
  kind: z.enum(['disk', 'kernel', 'iso']),
  /** e.g. "alpine", "debian", "ubuntu-desktop". */
  os: z.string().max(64),
  description: z.string().max(500).optional(),
  minMemoryMiB: z.number().int().min(16),
  /** The console a person uses: serial text or a graphical (VNC) screen. */
  console: ConsoleKind,
  /** A desktop template is too slow without KVM: hosts on TCG refuse it. */
  needsKvm: z.boolean(),
  /** The image runs an SSH server (e.g. OpenSSH in debian-12): VMs of it get an SSH command (absent: none). */
  ssh: z.boolean().optional(),
  files: z.array(z.object({
    /** `iso`: an iso template's installer image (ISO 9660). */
    role: z.enum(['disk', 'kernel', 'initrd', 'iso']),
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
  /** The image runs an SSH server on port 22 (default: no, and its VMs' pages offer no SSH command). */
  ssh: z.boolean().optional(),
  /** `iso`: the file is an installer ISO (ISO 9660), not a disk image (default `disk`). */
  kind: z.enum(['disk', 'iso']).optional(),
});
export type TemplateImportRequest = z.infer<typeof TemplateImportRequest>;
