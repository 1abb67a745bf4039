// Edits Ubuntu's boot/grub/grub.cfg (and 22.04's loopback.cfg) so that every install entry starts
// the unattended install: `autoinstall ds=nocloud\;s=/cdrom/nocloud/` goes before the `---` (what
// follows `---` is copied to the installed system's kernel line). GRUB needs the `;` escaped.
import { InvalidField } from '../base/errors.ts';

export const AUTOINSTALL_ARGS = 'autoinstall ds=nocloud\\;s=/cdrom/nocloud/';

/** A `linux` line that boots the live-server installer: `/casper/vmlinuz`, `/casper/hwe-vmlinuz`... */
const INSTALL_LINE = /^(\s*linux\s+\/casper\/[^\s]*vmlinuz[^\s]*)(.*)$/;

/** Words an earlier remaster (or a person) may have put there: replaced, never doubled. */
const OLD_WORDS = /^(autoinstall|ds=nocloud.*|"ds=nocloud.*"|'ds=nocloud.*')$/;

export interface GrubEdit {
  text: string;
  /** How many install entries now carry the autoinstall arguments. */
  entries: number;
}

/** Adds AUTOINSTALL_ARGS to every install entry; throws when there is none (not a live-server ISO). */
export function addAutoinstallToGrub(cfg: string, file = 'boot/grub/grub.cfg'): GrubEdit {
  let entries = 0;
  const lines = cfg.split('\n').map((line) => {
    const m = INSTALL_LINE.exec(line);
    if (!m) return line;
    entries++;
    const [, head, tail] = m as unknown as [string, string, string];
    const dash = tail.search(/(^|\s)---(\s|$)/);
    const before = (dash < 0 ? tail : tail.slice(0, dash)).split(/\s+/).filter((w) => w && !OLD_WORDS.test(w));
    const after = dash < 0 ? '' : tail.slice(dash).trim().replace(/^---\s*/, '');
    return [head, ...before, AUTOINSTALL_ARGS, '---', ...(after ? [after] : [])].join(' ');
  });
  if (entries === 0) {
    throw new InvalidField('ubuntuIso', `${file} has no "linux /casper/...vmlinuz" entry: this is not an Ubuntu live-server ISO`);
  }
  return { text: lines.join('\n'), entries };
}
