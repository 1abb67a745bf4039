// What a person fills in to make an installer USB, as the web installer's forms and the terminal menu
// both collect it: the installer options (checked by autoinstall/'s own schema, field by field, so
// an error sits next to its input) and where the Ubuntu ISO comes from.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { run } from '../../base/exec.ts';
import { SkyError } from '../../base/errors.ts';
import { installerOptionsSchema, RELEASES, ROLES, type InstallerOptionsInput, type Release, type Role } from '../../autoinstall/index.ts';
import { isLoopbackHost } from '../../server/install.ts';
import { parseJoin } from '../../wire/api.ts';

/** The options form, exactly as the browser (or the menu) sends it: strings. */
export interface OptionsForm {
  role: string;
  hostnamePrefix: string;
  adminUser: string;
  password: string;
  sshKeys: string;
  timezone: string;
  keyboardLayout: string;
  locale: string;
  proxy: string;
  mirror: string;
  controllerUrl: string;
  joinToken: string;
}

export const OPTION_FIELDS: ReadonlyArray<keyof OptionsForm> = [
  'role', 'hostnamePrefix', 'adminUser', 'password', 'sshKeys', 'timezone', 'keyboardLayout', 'locale',
  'proxy', 'mirror', 'controllerUrl', 'joinToken',
];

/** Field -> message, for inline errors. */
export type FieldErrors = Partial<Record<string, string>>;

export function emptyOptionsForm(over: Partial<OptionsForm> = {}): OptionsForm {
  return {
    role: 'agent', hostnamePrefix: '', adminUser: 'skyhost', password: '', sshKeys: '', timezone: 'Etc/UTC',
    keyboardLayout: 'us', locale: 'en_US.UTF-8', proxy: '', mirror: '', controllerUrl: '', joinToken: '', ...over,
  };
}

/** Picks the known fields out of a request body or query (anything else is ignored), as trimmed strings. */
export function readOptionsForm(body: unknown): OptionsForm {
  const src = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const form = emptyOptionsForm();
  for (const f of OPTION_FIELDS) {
    const v = src[f];
    if (typeof v === 'string') form[f] = f === 'password' ? v : v.trim();
  }
  if (form.role === 'controller') {
    // A controller joins no other controller: these come only from a link meant for host nodes.
    form.controllerUrl = '';
    form.joinToken = '';
  }
  return form;
}

const passwordRule = z
  .string()
  .min(8, 'must be at least 8 characters')
  .max(128, 'must be at most 128 characters')
  .regex(/^[^\x00-\x1f\x7f]*$/, 'must not contain control characters such as newlines');

/** Checks one field on its own (the terminal menu asks again right away). Undefined when fine. */
export function checkOptionField(field: keyof OptionsForm, value: string): string | undefined {
  if (field === 'password') {
    if (value === '') return undefined;
    const r = passwordRule.safeParse(value);
    return r.success ? undefined : r.error.issues[0]?.message;
  }
  if (field === 'role') return (ROLES as readonly string[]).includes(value) ? undefined : 'choose "agent" (a host node) or "controller"';
  const unreachable = field === 'controllerUrl' ? loopbackController(value) : field === 'joinToken' ? loopbackJoinString(value) : undefined;
  if (unreachable) return unreachable;
  const input = toInputValue(field, value);
  if (input === undefined) return undefined;
  const schema = (installerOptionsSchema.shape as Record<string, z.ZodType>)[field];
  if (!schema) return undefined;
  const r = schema.safeParse(input);
  if (r.success) return undefined;
  const issue = r.error.issues[0];
  const which = field === 'sshKeys' && issue && typeof issue.path[0] === 'number' ? ` (line ${issue.path[0] + 1})` : '';
  return `${issue?.message ?? 'is not valid'}${which}`;
}

/**
 * A controller address that no lab PC can reach: this PC's own (localhost, 127.x, ::1, 0.0.0.0).
 * Every PC installed from the stick would look for the controller on itself.
 */
function loopbackController(value: string): string | undefined {
  let host: string;
  try {
    host = new URL(value).hostname;
  } catch {
    return undefined; // not a URL at all: the schema's own message says so
  }
  if (!isLoopbackHost(host)) return undefined;
  return `${value} is this PC's own address: every lab PC installed from the stick would look for the controller on itself. ` +
    "Give the address lab PCs reach the controller at, e.g. http://10.0.0.5:8080 (the controller's Hosts page shows it), or leave it empty to find it on the network.";
}

/** A join string whose controller addresses are all loopback (made on a page opened as localhost by an older controller). */
function loopbackJoinString(value: string): string | undefined {
  if (!value.startsWith('shk1.')) return undefined;
  let addresses: string[] | undefined;
  try {
    addresses = parseJoin(value).addresses;
  } catch (err) {
    return (err as Error).message;
  }
  if (!addresses?.length || !addresses.every((a) => isLoopbackHost(new URL(a).hostname))) return undefined;
  return `this join token names only this PC's own address (${addresses.join(', ')}) as the controller: lab PCs could not reach it. ` +
    "Make a new one on the controller's Hosts page, opened through its network address.";
}

function toInputValue(field: keyof OptionsForm, value: string): unknown {
  if (field === 'sshKeys') {
    const keys = value.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
    return keys.length ? keys : undefined;
  }
  return value === '' ? undefined : value;
}

/** Every field's error, or none. */
export function checkOptionsForm(form: OptionsForm): FieldErrors {
  const errors: FieldErrors = {};
  for (const f of OPTION_FIELDS) {
    const e = checkOptionField(f, form[f]);
    if (e) errors[f] = e;
  }
  return errors;
}

/** The installer options without the password (its hash is added by `hashPassword`). */
export function toInstallerOptions(form: OptionsForm, passwordHash?: string): InstallerOptionsInput {
  const o: Record<string, unknown> = { role: form.role as Role };
  for (const f of OPTION_FIELDS) {
    if (f === 'role' || f === 'password') continue;
    const v = toInputValue(f, form[f]);
    if (v !== undefined) o[f] = v;
  }
  if (passwordHash) o.adminPasswordHash = passwordHash;
  return o as InstallerOptionsInput;
}

/** A SHA-512 crypt hash of `password` (`openssl passwd -6`, the password on stdin, never in argv). */
export async function hashPassword(password: string): Promise<string> {
  const r = await run('openssl', ['passwd', '-6', '-stdin'], { input: password + '\n', timeout: 10_000 });
  const hash = r.stdout.trim();
  if (!hash.startsWith('$6$')) throw new SkyError(500, 'hash_failed', 'openssl did not produce a password hash');
  return hash;
}

/** Where the Ubuntu ISO comes from. */
export type IsoSource = { kind: 'path'; path: string } | { kind: 'download'; mirror: string; release: Release };

export interface IsoForm {
  source: string;
  isoPath: string;
  ubuntuMirror: string;
  release: string;
}

export function readIsoForm(body: unknown, defaults: { ubuntuMirror: string }): IsoForm {
  const src = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const s = (k: string, d = '') => (typeof src[k] === 'string' ? (src[k] as string).trim() : d);
  // "Use this one" beside an ISO found on this PC sends its path as isoChoice.
  if (s('isoChoice')) return { source: 'path', isoPath: s('isoChoice'), ubuntuMirror: s('ubuntuMirror', defaults.ubuntuMirror), release: s('release', '24.04') };
  return { source: s('source', 'path'), isoPath: s('isoPath'), ubuntuMirror: s('ubuntuMirror', defaults.ubuntuMirror), release: s('release', '24.04') };
}

const mirrorUrl = z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// address' });

/** The ISO source, or errors by field. A path must be a readable file (whether it is Ubuntu's is checked by the build). */
export function checkIsoForm(form: IsoForm): { source?: IsoSource; errors: FieldErrors } {
  if (form.source === 'download') {
    const errors: FieldErrors = {};
    if (!mirrorUrl.safeParse(form.ubuntuMirror).success) errors.ubuntuMirror = 'must be an http:// or https:// address, e.g. https://releases.ubuntu.com';
    if (!(RELEASES as readonly string[]).includes(form.release)) errors.release = `choose ${RELEASES.join(' or ')}`;
    if (Object.keys(errors).length) return { errors };
    return { source: { kind: 'download', mirror: form.ubuntuMirror.replace(/\/+$/, ''), release: form.release as Release }, errors };
  }
  if (form.source !== 'path') return { errors: { source: 'choose a file on this computer or a download' } };
  if (!form.isoPath) return { errors: { isoPath: 'give the path of the Ubuntu Server ISO file, e.g. /home/teacher/Downloads/ubuntu-24.04.1-live-server-amd64.iso' } };
  if (/[\x00-\x1f]/.test(form.isoPath)) return { errors: { isoPath: 'must not contain control characters' } };
  const abs = path.resolve(form.isoPath);
  if (!existsSync(abs)) return { errors: { isoPath: `there is no file ${abs}` } };
  if (!statSync(abs).isFile()) return { errors: { isoPath: `${abs} is a folder, not an ISO file` } };
  return { source: { kind: 'path', path: abs }, errors: {} };
}

/** Sends a zod-derived 422 from buildInstallerIso back to the form field it names (`options.hostnamePrefix`). */
export function fieldOfError(e: unknown): { field: string; message: string } | undefined {
  if (!(e instanceof SkyError) || e.status !== 422) return undefined;
  const fields = (e.details as { fields?: Array<{ field: string; message: string }> } | undefined)?.fields;
  const first = fields?.[0];
  if (!first) return undefined;
  return { field: first.field.replace(/^options\./, '').replace(/\.\d+$/, '').replace(/^adminPasswordHash$/, 'password'), message: first.message };
}
