// `skyhost usb list` and `skyhost usb write IMAGE DEVICE`.
import { createInterface } from 'node:readline/promises';
import type { Command } from '../base/cli.ts';
import { UsageError } from '../base/cli.ts';
import { confirmationMatches, confirmationWord, describeDrive, formatBytes, hasErrors, type Finding } from './usb-guards.ts';
import type { WriteProgress } from './usb.ts';

/** The writer (worker threads, lsblk) loads only when a usb command runs. */
const usb = () => import('./usb.ts');

const allowLoopFlag = {
  type: 'boolean',
  help: 'treat loop devices as USB sticks (for tests and benchmarks only)',
} as const;

export const usbListCommand: Command = {
  name: 'usb list',
  summary: 'list drives an installer could be written to, and why any of them is refused',
  flags: {
    json: { type: 'boolean', help: 'print JSON instead of a table' },
    'allow-loop': allowLoopFlag,
  },
  async run(ctx) {
    const choices = await (await usb()).listDrives({ allowLoop: ctx.flags['allow-loop'] === true });
    if (ctx.flags.json) {
      ctx.print(JSON.stringify(choices, null, 2));
      return 0;
    }
    if (choices.length === 0) {
      ctx.print('No drives found. Plug in a USB stick and run this again.');
      return 0;
    }
    for (const { drive, findings } of choices) {
      const status = hasErrors(findings) ? 'refused' : findings.length ? 'ok (see warning)' : 'ok';
      ctx.print(`${drive.path.padEnd(14)} ${formatBytes(drive.size).padStart(9)}  ${(drive.model ?? '-').padEnd(24)} ${(drive.transport ?? '-').padEnd(5)} ${status}`);
      for (const f of findings) ctx.print(`    ${f.level}: ${f.message}`);
    }
    return 0;
  },
};

export const usbWriteCommand: Command = {
  name: 'usb write',
  usage: 'IMAGE DEVICE',
  summary: 'write an installer image to a USB stick, with safety checks, progress and read-back verification',
  description:
    'Refuses partitions, the disk this computer runs from, the disk holding IMAGE, mounted, write-protected,\n' +
    'internal and too-small drives. Asks you to type the drive\'s model or serial unless --yes is given.',
  flags: {
    yes: { type: 'boolean', help: 'do not ask for confirmation (scripts)' },
    quiet: { type: 'boolean', help: 'print no progress' },
    'allow-loop': allowLoopFlag,
  },
  async run(ctx) {
    const [image, device, ...extra] = ctx.args;
    if (!image || !device || extra.length) throw new UsageError('usb write needs IMAGE and DEVICE (see skyhost usb write --help)');
    const allowLoop = ctx.flags['allow-loop'] === true;
    const { drive, findings } = await (await usb()).checkTarget(image, device, { allowLoop });
    printFindings(ctx.print, findings);
    if (hasErrors(findings)) {
      ctx.print(`Refused ${drive.path}: nothing was written.`);
      return 2;
    }
    if (ctx.flags.yes !== true) {
      const word = confirmationWord(drive);
      const typed = await ask(`Everything on ${drive.path}, ${describeDrive(drive)}, will be erased.\nType "${word}" to confirm: `);
      if (!confirmationMatches(drive, typed ?? '')) {
        ctx.print('Not confirmed: nothing was written.');
        return 2;
      }
    }
    const result = await (await usb()).writeImage(image, drive.path, ctx.flags.quiet === true ? {} : { onProgress: progressPrinter() });
    ctx.print(`Wrote ${formatBytes(result.bytes)} to ${drive.path} in ${(result.writeMs / 1000).toFixed(1)} s and read it back: sha256 ${result.sha256} matches.`);
    return 0;
  },
};

function printFindings(print: (s: string) => void, findings: Finding[]): void {
  for (const f of findings) print(`${f.level}: ${f.message}`);
}

/** One line read from stdin, or undefined at its end. */
async function ask(question: string): Promise<string | undefined> {
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY === true });
  try {
    const closed = new Promise<undefined>((resolve) => rl.once('close', () => resolve(undefined)));
    return await Promise.race([rl.question(question), closed]);
  } finally {
    rl.close();
  }
}

/** Progress on stderr: a rewritten line on a terminal, a line every 10% otherwise. */
export function progressPrinter(out: NodeJS.WriteStream = process.stderr): (p: WriteProgress) => void {
  let lastTenth = -1;
  let lastPhase = '';
  return (p) => {
    const pct = p.total ? Math.floor((p.bytes / p.total) * 100) : 100;
    if (out.isTTY) {
      out.write(`\r${p.phase.padEnd(9)} ${String(pct).padStart(3)}%  ${formatBytes(p.bytes)} of ${formatBytes(p.total)}   `);
      if (p.phase === 'verifying' && p.bytes === p.total) out.write('\n');
      return;
    }
    const tenth = Math.floor(pct / 10);
    if (p.phase !== lastPhase || tenth !== lastTenth) {
      out.write(`${p.phase} ${pct}%\n`);
      lastPhase = p.phase;
      lastTenth = tenth;
    }
  };
}
