// `skyhost setup --cli`: the web installer's steps as a terminal menu, for a PC without a browser.
// It reads one answer per line (so answers can be piped in: tests, scripts), checks each against the
// same rules as the web forms and asks again on a wrong one; running out of answers stops it.
import path from 'node:path';
import { createInterface } from 'node:readline';
import { SkyError } from '../../base/errors.ts';
import { checkTarget, listDrives } from '../../iso/usb.ts';
import { confirmationMatches, confirmationWord, describeDrive, formatBytes, hasErrors } from '../../iso/usb-guards.ts';
import type { Job, SetupJobs } from './jobs.ts';
import {
  checkIsoForm, checkOptionField, checkOptionsForm, emptyOptionsForm, hashPassword, toInstallerOptions, type OptionsForm,
} from './plan.ts';

export interface MenuDeps {
  jobs: SetupJobs;
  ubuntuMirror: string;
  /** Checks an ISO before building (iso/remaster.ts inspectUbuntuIso). */
  inspectIso?: (file: string) => Promise<unknown>;
  allowLoop?: boolean;
  /** Folder the default output file name is proposed in. */
  cwd: string;
}

/** No more answers on stdin. */
class EndOfAnswers extends Error {}

/** Runs the menu; resolves to the exit code (0 built, 1 failed, 2 stopped). */
export async function runSetupMenu(input: NodeJS.ReadableStream, output: NodeJS.WritableStream, deps: MenuDeps): Promise<number> {
  const rl = createInterface({ input, terminal: false });
  const lines = rl[Symbol.asyncIterator]();
  const say = (s = '') => void output.write(s + '\n');
  const ask = async (question: string, fallback = ''): Promise<string> => {
    output.write(`${question}${fallback ? ` [${fallback}]` : ''}: `);
    const next = await lines.next();
    if (next.done) throw new EndOfAnswers();
    const answer = next.value.trim();
    if (!(input as { isTTY?: boolean }).isTTY) output.write('\n');
    return answer === '' ? fallback : answer;
  };
  /** Asks until `check` accepts the answer. */
  const askValid = async (question: string, fallback: string, check: (v: string) => string | undefined): Promise<string> => {
    for (;;) {
      const v = await ask(question, fallback);
      const problem = check(v);
      if (!problem) return v;
      say(`  ! ${problem}`);
    }
  };

  try {
    say('SkyHost setup: make the USB stick that installs a lab PC (every PC booted from it is wiped).');
    say('');
    say('What should this USB stick set up?');
    say('  1) Host node: a lab PC that runs VMs for students');
    say('  2) Controller: the PC that serves the SkyHost web page');
    const roleAnswer = await askValid('Choose 1 or 2', '1', (v) => (['1', '2', 'agent', 'controller'].includes(v) ? undefined : 'type 1 or 2'));
    const role = roleAnswer === '2' || roleAnswer === 'controller' ? 'controller' : 'agent';
    const form: OptionsForm = emptyOptionsForm({ role });
    const field = async (name: keyof OptionsForm, question: string, fallback = form[name]) => {
      form[name] = await askValid(question, fallback, (v) => checkOptionField(name, v));
    };
    await field('hostnamePrefix', 'Name prefix of the PCs (each gets PREFIX-xxxxxx)', role === 'controller' ? 'skyhost-controller' : 'skyhost-host');
    await field('timezone', 'Time zone');
    await field('keyboardLayout', 'Keyboard layout');
    await field('locale', 'Language (locale)');
    await field('adminUser', 'Administrator user name');
    await field('password', 'Administrator password (shown as you type; empty: SSH key only)', '');
    await field('sshKeys', 'SSH public key (one line; empty for none)', '');
    await field('proxy', 'School web proxy (empty for none)', '');
    await field('mirror', 'Ubuntu package mirror (empty for none)', '');
    if (role === 'agent') {
      await field('controllerUrl', 'Controller address (empty: found on the network)', '');
      await field('joinToken', 'Join token (empty: an admin accepts each PC)', '');
    }
    const errors = checkOptionsForm(form);
    const firstError = Object.entries(errors)[0];
    if (firstError) throw new SkyError(422, 'invalid_field', `${firstError[0]}: ${firstError[1]}`);
    const plan = toInstallerOptions(form, form.password ? await hashPassword(form.password) : undefined);

    say('');
    say('Which Ubuntu Server ISO (22.04 or 24.04, live server, amd64)?');
    say('  1) A file on this computer');
    say('  2) Download it (its SHA256SUMS is checked)');
    const how = await askValid('Choose 1 or 2', '1', (v) => (['1', '2'].includes(v) ? undefined : 'type 1 or 2'));
    let source;
    for (;;) {
      const isoForm = how === '2'
        ? { source: 'download', isoPath: '', ubuntuMirror: await ask('Mirror', deps.ubuntuMirror), release: await ask('Release (22.04 or 24.04)', '24.04') }
        : { source: 'path', isoPath: await ask('ISO file'), ubuntuMirror: deps.ubuntuMirror, release: '24.04' };
      const checked = checkIsoForm(isoForm);
      let problem = Object.values(checked.errors)[0];
      if (!problem && checked.source?.kind === 'path' && deps.inspectIso) {
        problem = await deps.inspectIso(checked.source.path).then(() => undefined, (e: unknown) => (e instanceof SkyError && e.status < 500 ? e.message.replace(/^ubuntuIso: /, '') : Promise.reject(e)));
      }
      if (!problem && checked.source) {
        source = checked.source;
        break;
      }
      say(`  ! ${problem}`);
    }
    const out = path.resolve(deps.cwd, await askValid('Save the installer as', path.join(deps.cwd, `skyhost-${role}.iso`), (v) => (v.endsWith('.iso') ? undefined : 'the file name must end in .iso')));

    say('');
    const job = deps.jobs.start(plan, source, out);
    await follow(() => job.stage === 'downloading' || job.stage === 'building', () => `${job.message.replace(/: \d+ of .*$/, '')} ${Math.floor(job.fraction * 10) * 10}%`, say);
    if (job.stage === 'failed' || !job.result) {
      say(`The build did not work: ${job.error}`);
      return 1;
    }
    say(`The installer is ready: ${job.result.out} (${formatBytes(job.result.bytes)}, Ubuntu ${job.result.release}).`);
    for (const w of job.result.warnings) say(`  ${w}`);

    say('');
    const write = await askValid('Write it to a USB stick now? (y/n)', 'n', (v) => (/^(y|yes|n|no)$/i.test(v) ? undefined : 'type y or n'));
    if (!/^y/i.test(write)) {
      say(`Done. Write it later with: skyhost usb write ${job.result.out} DEVICE`);
      return 0;
    }
    return await writeStep(job, deps, ask, say);
  } catch (e) {
    if (e instanceof EndOfAnswers) {
      say('');
      say('Stopped: no more answers. Nothing was written to any drive.');
      return 2;
    }
    throw e;
  } finally {
    rl.close();
  }
}

async function writeStep(job: Job, deps: MenuDeps, ask: (q: string, d?: string) => Promise<string>, say: (s?: string) => void): Promise<number> {
  const image = job.result!.out;
  for (;;) {
    const choices = await listDrives({ image, imageSize: job.result!.bytes, ...(deps.allowLoop ? { allowLoop: true } : {}) });
    const usable = choices.filter((c) => !hasErrors(c.findings));
    say('Drives:');
    choices.forEach((c) => {
      const n = usable.indexOf(c);
      say(`  ${n >= 0 ? `${n + 1})` : '--'} ${describeDrive(c.drive)} ${c.drive.path}${n >= 0 ? '' : ': refused'}`);
      for (const f of c.findings) say(`       ${f.level === 'error' ? 'x' : '!'} ${f.message}`);
    });
    const pick = await ask(`Choose a drive (1-${usable.length}; r to look again; empty to stop)`);
    if (pick === '') {
      say('Nothing was written.');
      return 0;
    }
    if (pick === 'r') continue;
    const choice = usable[Number(pick) - 1];
    if (!/^\d+$/.test(pick) || !choice) {
      say('  ! choose one of the numbered drives');
      continue;
    }
    const { drive, findings } = await checkTarget(image, choice.drive.path, deps.allowLoop ? { allowLoop: true } : {});
    if (hasErrors(findings)) {
      say(`  ! ${findings.filter((f) => f.level === 'error').map((f) => f.message).join(' ')}`);
      continue;
    }
    const typed = await ask(`Everything on ${describeDrive(drive)} will be erased. Type "${confirmationWord(drive)}" to confirm`);
    if (!confirmationMatches(drive, typed)) {
      say('  ! that is not the drive\'s name: nothing was written');
      continue;
    }
    const usb = deps.jobs.writeUsb(job, drive);
    await follow(() => ['writing', 'syncing', 'verifying'].includes(usb.stage), () => `${usb.stage} ${usb.total ? Math.floor((usb.bytes / usb.total) * 10) * 10 : 0}%`, say);
    if (usb.stage === 'failed') {
      say(`Writing did not work: ${usb.error}`);
      return 1;
    }
    say(`Done: ${drive.path} holds the installer and read back with the same sha256 (${usb.sha256}). You can unplug it.`);
    return 0;
  }
}

/** Prints a progress line whenever it changes, until `running()` turns false. */
async function follow(running: () => boolean, line: () => string, say: (s: string) => void): Promise<void> {
  let last = '';
  for (;;) {
    const now = line();
    if (now !== last) {
      say(`  ${now}`);
      last = now;
    }
    if (!running()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
}
