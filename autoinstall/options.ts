// What a person chooses for an installer USB: the input of renderUserData() and buildInstallerIso().
// Every string that ends up in the user-data, a unit file or a config file is checked here first, so
// that hostile text (spaces in a hostname, a newline in a key, YAML or shell syntax) never gets through.
import { z } from 'zod';
import { fromZod } from '../base/errors.ts';

/** One DNS label: what a hostname prefix may be (the MAC suffix is added at first boot). */
const hostnameLabel = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/, 'must be 1-40 lower-case letters, digits or "-", not starting or ending with "-"');

/** A Linux user name as adduser accepts it by default. */
const username = z
  .string()
  .regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'must be 1-32 lower-case letters, digits, "_" or "-", starting with a letter or "_"')
  .refine((u) => !RESERVED_USERS.has(u), 'is a system account name');
const RESERVED_USERS = new Set(['root', 'daemon', 'bin', 'sys', 'sync', 'games', 'man', 'lp', 'mail', 'news', 'nobody', 'syslog', 'libvirt-qemu']);

/** A crypt(3) hash (`openssl passwd -6`, `mkpasswd`): never a plain password. */
const passwordHash = z
  .string()
  .regex(/^\$(1|5|6|y|gy|2[aby]?)\$[./A-Za-z0-9$=,]{8,200}$/, 'must be a crypt hash such as the output of "openssl passwd -6" (starts with $6$), not a plain password');

/** One OpenSSH public key on one line: type, base64 body, optional comment without control characters. */
export const sshPublicKey = z
  .string()
  .transform((s) => s.trim())
  .pipe(
    z.string().regex(
      /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [\x20-\x7e]{1,200})?$/,
      'must be one OpenSSH public key on one line ("ssh-ed25519 AAAA... comment")',
    ),
  );

/** Printable text without control characters (a newline would break out of a YAML or unit line). */
const plainText = (max: number) =>
  z.string().max(max).regex(/^[^\x00-\x1f\x7f]*$/, 'must not contain control characters such as newlines');

const httpUrl = z
  .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
  .refine((u) => !/[\s"'`\\]/.test(u), 'must not contain spaces, quotes or backslashes');

export const ROLES = ['agent', 'controller'] as const;
export type Role = (typeof ROLES)[number];
export const RELEASES = ['22.04', '24.04'] as const;
export type Release = (typeof RELEASES)[number];

export const installerOptionsSchema = z
  .strictObject({
    /** `agent` (a host that runs VMs) or `controller` (the web page and scheduler). */
    role: z.enum(ROLES),
    /** Each PC is named PREFIX-XXXXXX at first boot (last 6 hex digits of its MAC), e.g. `lab-3f9a2c`. */
    hostnamePrefix: hostnameLabel.optional(),
    /** The admin account created on every PC, e.g. `skyhost`. */
    adminUser: username.default('skyhost'),
    /** Shown by `finger`, e.g. `Lab admin`. */
    adminRealname: plainText(100).default('SkyHost admin'),
    /** crypt hash of the admin password (`openssl passwd -6`); without it, password login is locked. */
    adminPasswordHash: passwordHash.optional(),
    /** OpenSSH public keys allowed to log in as the admin. */
    sshKeys: z.array(sshPublicKey).max(20).default([]),
    /** e.g. `Europe/Paris` */
    timezone: z
      .string()
      .regex(/^(UTC|[A-Z][A-Za-z_+-]*(\/[A-Za-z0-9_+-]+){0,2})$/, 'must be a tz name such as Europe/Paris or UTC')
      .default('Etc/UTC'),
    /** e.g. `fr` */
    keyboardLayout: z.string().regex(/^[a-z]{2,10}$/, 'must be an XKB layout such as us or fr').default('us'),
    /** e.g. `dvorak`; empty for the layout's default */
    keyboardVariant: z.string().regex(/^[a-z0-9_-]{0,30}$/, 'must be an XKB variant such as dvorak').optional(),
    /** e.g. `fr_FR.UTF-8` */
    locale: z
      .string()
      .regex(/^[a-z]{2,3}(_[A-Z]{2})?\.UTF-8$/, 'must be a UTF-8 locale such as en_US.UTF-8')
      .default('en_US.UTF-8'),
    /** The school's HTTP proxy for apt during and after the install, e.g. `http://proxy.school:3128`. */
    proxy: httpUrl.optional(),
    /** An Ubuntu archive mirror, e.g. `http://mirror.school/ubuntu`. */
    mirror: httpUrl.optional(),
    /** The controller's URL; without it the agent finds the controller by mDNS. */
    controllerUrl: httpUrl.optional(),
    /**
     * A join token or join string (`shk1.…`, with the controller's addresses and certificate
     * fingerprint) from the controller's "Add a host" page, so hosts are accepted without a click.
     */
    joinToken: z
      .string()
      .regex(/^[A-Za-z0-9._~+/=-]{8,2048}$/, 'must be 8-2048 letters, digits or . _ ~ + / = -')
      .optional(),
    /** The Ubuntu release of the ISO (the remaster detects it): `sizing-policy: all` exists on 24.04 only. */
    release: z.enum(RELEASES).default('24.04'),
    /** After installing: `poweroff` (safe: the USB is pulled before the next boot) or `reboot`. */
    afterInstall: z.enum(['poweroff', 'reboot']).default('poweroff'),
  });

export type InstallerOptionsInput = z.input<typeof installerOptionsSchema>;
export type InstallerOptions = z.output<typeof installerOptionsSchema>;

/** Checks and completes options; a bad one throws a 422 InvalidField-style error naming the option. */
export function parseInstallerOptions(input: unknown): InstallerOptions {
  const result = installerOptionsSchema.safeParse(input);
  if (!result.success) throw fromZod(result.error, 'options');
  return result.data;
}

/** The hostname prefix actually used: the given one, else one per role. */
export function effectivePrefix(o: InstallerOptions): string {
  return o.hostnamePrefix ?? (o.role === 'controller' ? 'skyhost-controller' : 'skyhost-host');
}

/** Things the person must be told before using the USB (the first one always: it wipes a disk). */
export function installerWarnings(o: InstallerOptions): string[] {
  const out = [
    'WARNING: this installer ERASES THE LARGEST DISK of every PC it boots, without asking. Unplug the USB stick ' +
      'from any PC whose data you want to keep.',
  ];
  if (!o.adminPasswordHash && o.sshKeys.length === 0) {
    out.push('No admin password hash and no SSH key: nobody will be able to log in to the installed PCs (the SkyHost web page still works).');
  }
  if (o.afterInstall === 'reboot') {
    out.push('afterInstall is "reboot": remove the USB stick before the PC restarts, or it installs again.');
  }
  return out;
}
