// The autoinstall document, assembled section by section, and its rendering to `#cloud-config`
// user-data. The `yaml` package writes every value (user text is quoted or escaped by it, never
// concatenated), and the result is checked against Ubuntu's schema before anyone gets it.
import { Document, isSeq } from 'yaml';
import { parseInstallerOptions, type InstallerOptions, type InstallerOptionsInput } from './options.ts';
import * as apt from './sections/apt.ts';
import * as identity from './sections/identity.ts';
import * as lateCommands from './sections/late-commands.ts';
import * as locale from './sections/locale.ts';
import * as network from './sections/network.ts';
import * as packages from './sections/packages.ts';
import * as ssh from './sections/ssh.ts';
import * as storage from './sections/storage.ts';
import { validateAutoinstall } from './validate.ts';

/** Whether the admin needs a sudoers drop-in: with SSH keys but no password, sudo would ask for one. */
export function needsSudoers(o: InstallerOptions): boolean {
  return !o.adminPasswordHash && o.sshKeys.length > 0;
}

/** The value of the `autoinstall:` key, in the order the installer runs it. */
export function buildAutoinstall(o: InstallerOptions): Record<string, unknown> {
  const doc: Record<string, unknown> = {
    version: 1,
    locale: locale.emitLocale(o),
    keyboard: locale.emitKeyboard(o),
    timezone: locale.emitTimezone(o),
    [network.key]: network.emit(o),
  };
  const proxy = apt.emitProxy(o);
  if (proxy) doc[apt.proxyKey] = proxy;
  const mirror = apt.emit(o);
  if (mirror) doc[apt.key] = mirror;
  Object.assign(doc, {
    [storage.key]: storage.emit(o),
    [identity.key]: identity.emit(o),
    [ssh.key]: ssh.emit(o),
    [packages.key]: packages.emit(o),
    [lateCommands.key]: lateCommands.emit(o, needsSudoers(o)),
    shutdown: o.afterInstall,
  });
  return doc;
}

/** The SkyHost sections' own shapes: a bug in an emit function is caught here, not on a PC. */
const SECTION_SCHEMAS = {
  [identity.key]: identity.schema,
  [ssh.key]: ssh.schema,
  [storage.key]: storage.schema,
  [network.key]: network.schema,
  [apt.key]: apt.schema,
  [packages.key]: packages.schema,
  [lateCommands.key]: lateCommands.schema,
  keyboard: locale.keyboardSchema,
  locale: locale.localeSchema,
  timezone: locale.timezoneSchema,
} as const;

/**
 * `#cloud-config` user-data with an `autoinstall:` section for these options.
 * @example renderUserData({ role: 'agent', hostnamePrefix: 'lab', sshKeys: ['ssh-ed25519 AAAA... me'] })
 */
export function renderUserData(input: InstallerOptionsInput | InstallerOptions): string {
  const o = parseInstallerOptions(input);
  const doc = buildAutoinstall(o);
  for (const [section, schema] of Object.entries(SECTION_SCHEMAS)) {
    if (doc[section] !== undefined) schema.parse(doc[section]);
  }
  validateAutoinstall(doc, o.release);
  const header =
    '#cloud-config\n' +
    `# SkyHost ${o.role} installer (Ubuntu ${o.release} autoinstall).\n` +
    '# WARNING: installing ERASES THE LARGEST DISK of the PC without asking.\n';
  const yaml = new Document({ autoinstall: doc });
  // One late-command per line (`- [install, -D, ...]`): easier to read and to diff.
  const commands = yaml.getIn(['autoinstall', lateCommands.key], true);
  if (isSeq(commands)) for (const item of commands.items) if (isSeq(item)) item.flow = true;
  return header + yaml.toString({ lineWidth: 0 });
}

/** `meta-data` for the NoCloud datasource: an instance id is all the installer needs. */
export function renderMetaData(o: InstallerOptions): string {
  return new Document({ 'instance-id': `skyhost-${o.role}-installer` }).toString();
}
