// Group `ubuntu` (opt-in: `npm run bench -- --only ubuntu`): the Ubuntu recipe of `skyhost template build`,
// which an Ubuntu host offers for its own release (ubuntu-24.04 on noble). On this Debian PC `template build`
// does not offer it; this bench builds it anyway with the same recipe code, told that the host is Ubuntu
// 24.04 (distroRecipe's `host`), from Ubuntu's archive, with Ubuntu's archive key given to mmdebstrap
// (an Ubuntu host's apt trusts it already). Then a VM of it is requested through a controller and a real
// agent (QEMU under TCG) with an SSH key and a startup script: the serial console shows the login prompt
// with the VM's name (cloud-init set it), the real OpenSSH client logs in as `ubuntu` through the agent's
// forwarded port and finds the startup script's marker. Any of these failing fails the group: no figure.
//
// Not in `npm test`: CI's machines reach only Debian's mirror and the npm registry.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDistroImage, defaultCacheDir, distroRecipe, hostRelease, type BuiltImage, type DistroRecipe } from '../agent/debian-template.ts';
import { run } from '../base/exec.ts';
import { ensureDaemons } from '../host/hostsetup.ts';
import { ROOT, type BenchContext, type Group } from './group.ts';
import { requestVmWithSsh, waitUntil, withRealAgent } from './processes.ts';
import { figure, msSince, type Figure } from './stats.ts';
import { consoleShows } from './vm.ts';

/** The Ubuntu host this bench stands in for. */
const NOBLE = hostRelease('ID=ubuntu\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n');
const TARGET = 'ubuntu-24.04';
const TEMPLATE = 'bench-ubuntu';
const VM_NAME = 'ubu-student';
const MARKER = 'skyhost-startup-ran';

/**
 * Ubuntu's archive key, the one that signs noble's Release (Ubuntu Archive Automatic Signing Key (2018)).
 * Only this key is kept from the keyring package, so the download below is trusted for nothing else.
 */
export const UBUNTU_ARCHIVE_KEY = 'F6ECB3762474EDA9D21B7022871920D1991BC93C';
/** noble's ubuntu-keyring: its sha256 as listed in noble's main Packages index, whose sha256 is in the Release signed by the key above. */
const KEYRING_DEB = {
  url: 'http://archive.ubuntu.com/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb',
  sha256: '36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8',
};

/**
 * A keyring file holding Ubuntu's archive key alone, made once under `dir` from the ubuntu-keyring package
 * (fetched from Ubuntu's pool, checked against its pinned sha256, the key picked by its fingerprint).
 */
export async function ubuntuArchiveKeyring(dir: string): Promise<string> {
  const keyring = path.join(dir, 'ubuntu-archive-2018.gpg');
  if (existsSync(keyring)) return keyring;
  mkdirSync(dir, { recursive: true });
  const deb = path.join(dir, path.basename(KEYRING_DEB.url));
  if (!existsSync(deb)) {
    const res = await fetch(KEYRING_DEB.url, { signal: AbortSignal.timeout(60_000) });
    if (!res.ok) throw new Error(`${KEYRING_DEB.url} answered ${res.status}`);
    writeFileSync(`${deb}.part`, Buffer.from(await res.arrayBuffer()));
    renameSync(`${deb}.part`, deb);
  }
  const sha256 = createHash('sha256').update(readFileSync(deb)).digest('hex');
  if (sha256 !== KEYRING_DEB.sha256) {
    rmSync(deb);
    throw new Error(`${path.basename(deb)} has sha256 ${sha256}, not ${KEYRING_DEB.sha256} (noble's Packages index): removed`);
  }
  const work = mkdtempSync(path.join(dir, '.keyring-'));
  try {
    await run('dpkg-deb', ['-x', deb, path.join(work, 'root')]);
    const gpg = ['--homedir', work, '--batch', '--quiet', '--no-default-keyring', '--keyring', path.join(work, 'all.gpg')];
    await run('gpg', [...gpg, '--import', path.join(work, 'root/usr/share/keyrings/ubuntu-archive-keyring.gpg')]);
    await run('gpg', [...gpg, '--output', path.join(work, 'only.gpg'), '--export', UBUNTU_ARCHIVE_KEY]);
    const shown = (await run('gpg', ['--homedir', work, '--batch', '--with-colons', '--show-keys', path.join(work, 'only.gpg')])).stdout;
    const fingerprints = [...shown.matchAll(/^fpr:{9}([0-9A-F]+):/gm)].map((m) => m[1]);
    if (fingerprints[0] !== UBUNTU_ARCHIVE_KEY) throw new Error(`ubuntu-keyring holds no key ${UBUNTU_ARCHIVE_KEY} (found ${fingerprints.join(', ') || 'none'})`);
    renameSync(path.join(work, 'only.gpg'), keyring);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return keyring;
}

/** Runs `ssh ubuntu@127.0.0.1 -p PORT COMMAND` with the key; rejects when the login fails. */
function ssh(key: string, port: number, command: string) {
  return run('ssh', [
    '-i', key, '-p', String(port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR', 'ubuntu@127.0.0.1', command,
  ], { timeout: 30_000 });
}

async function measure(ctx: BenchContext): Promise<Figure[]> {
  await ensureDaemons();
  const recipe = await distroRecipe(TARGET, {}, NOBLE);
  const keyring = await ubuntuArchiveKeyring(path.join(ctx.cacheDir, 'ubuntu'));
  const say = (stage: string, detail: string) => ctx.say(`ubuntu: ${stage}: ${detail}`);
  // the build measured is one with every package already downloaded, as for debian-12 (bench/template.ts)
  const packages = path.join(defaultCacheDir(), 'apt', `${recipe.distro}-${recipe.suite}`);
  const debs = () => (existsSync(packages) ? readdirSync(packages).filter((f) => f.endsWith('.deb')).length : 0);
  const before = debs();
  let t0 = process.hrtime.bigint();
  let image = await buildDistroImage(recipe, { keyring, onProgress: say });
  const downloaded = debs() - before;
  if (image.cached || downloaded > 0) {
    t0 = process.hrtime.bigint();
    image = await buildDistroImage(recipe, { keyring, rebuild: true, onProgress: (s, d) => say(`${s} (warm packages)`, d) });
  }
  const buildS = msSince(t0) / 1000;
  const figures = [
    figure('ubuntu.build_s', 's', [buildS], {
      note: `${TARGET} (noble, ${recipe.packages.length} packages named, as an Ubuntu 24.04 host builds it, from archive.ubuntu.com) with every package already downloaded: install, ext4, compressed qcow2; load ${os.loadavg()[0]!.toFixed(1)} at the end; 1 run${downloaded > 0 ? ` (after a build that downloaded ${downloaded} packages)` : ''}`,
    }),
    figure('ubuntu.size_mb', 'MB', [statSync(image.disk).size / 1e6], {
      note: `disk.qcow2 (compressed; ${recipe.sizeGiB} GiB as the VM sees it before it grows) + kernel ${(statSync(image.kernel).size / 1e6).toFixed(1)} MB + initrd ${(statSync(image.initrd).size / 1e6).toFixed(1)} MB`,
    }),
  ];
  figures.push(await requestToSsh(ctx, image, recipe));
  return figures;
}

/**
 * `ubuntu.request_to_ssh_ms`: a VM of the built image requested through a controller and a real agent
 * (each in its own process) until `ssh ubuntu@` logs in; throws unless the serial console shows the
 * login prompt with the VM's name and the startup script's marker is there.
 */
export async function requestToSsh(ctx: BenchContext, image: BuiltImage, recipe: DistroRecipe): Promise<Figure> {
  const template = { name: TEMPLATE, kernel: image.kernel, initrd: image.initrd, disk: image.disk, cmdline: image.cmdline, os: 'ubuntu', minMemoryMiB: recipe.minMemoryMiB };
  return withRealAgent(ctx, { hostIdPrefix: 'bench-ubu', template }, async ({ controller: c, api, dataDir }) => {
    const key = path.join(dataDir, 'key');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'student@lab', '-f', key]);

    const t1 = process.hrtime.bigint();
    const { id, port } = await requestVmWithSsh(api, {
      name: VM_NAME, template: TEMPLATE, memoryMiB: 512, sshKey: readFileSync(`${key}.pub`, 'utf8').trim(),
      userData: `#cloud-config\nruncmd:\n  - [sh, -c, "echo ${MARKER} > /var/tmp/marker"]\n`,
    });
    // the serial login starts after cloud-init's first stage: its prompt carries the name cloud-init gave
    await consoleShows(`${c.url.replace(/^http/, 'ws')}/api/vms/${id}/console`, c.token, `${VM_NAME} login:`, 900_000);
    const consoleMs = msSince(t1);
    ctx.say(`ubuntu: "${VM_NAME} login:" on the serial console after ${Math.round(consoleMs)} ms`);
    let last = '';
    await waitUntil('an SSH login as ubuntu', 600_000, async () => {
      try {
        await ssh(key, port, 'true');
        return true;
      } catch (err) {
        last = (err as Error).message.split('\n').slice(-2).join(' ');
        return false; // sshd not up yet, or the key not installed yet
      }
    }, 1000).catch((err: Error) => {
      throw new Error(`${err.message}; last ssh error: ${last}`);
    });
    const sshMs = msSince(t1);
    ctx.say(`ubuntu: SSH login after ${Math.round(sshMs)} ms`);
    // cloud-init's last stage runs the startup script, maybe after sshd took the key
    let seen = '';
    await waitUntil('the startup script\'s marker', 600_000, async () => {
      seen = (await ssh(key, port, 'hostname; id -un; cat /var/tmp/marker 2>/dev/null; true')).stdout;
      return seen.includes(MARKER);
    }, 3000).catch((err: Error) => {
      throw new Error(`${err.message}; last answer: ${JSON.stringify(seen)}`);
    });
    const [hostname, user] = seen.split('\n');
    if (hostname !== VM_NAME || user !== 'ubuntu') throw new Error(`the VM says hostname ${hostname}, user ${user}: expected ${VM_NAME}, ubuntu`);
    const markerMs = msSince(t1);
    ctx.say(`ubuntu: marker after ${Math.round(markerMs)} ms`);
    const sshFigure = figure('ubuntu.request_to_ssh_ms', 'ms', [sshMs], {
      note: `${TARGET} under TCG, 1 vCPU, 512 MiB: POST /api/vms (controller + real agent processes) to \`ssh ubuntu@\` through the agent's forwarded port succeeding (tried every second); login prompt with the VM's name after ${(consoleMs / 1000).toFixed(0)} s, startup script's marker found after ${(markerMs / 1000).toFixed(0)} s; load ${os.loadavg()[0]!.toFixed(1)} at the end; 1 run`,
    });
    const del = await api('DELETE', `/api/vms/${id}`);
    if (del.status >= 300) throw new Error(`DELETE /api/vms/${id} answered ${del.status}`);
    return sshFigure;
  });
}

export const ubuntuGroup: Group = {
  name: 'ubuntu',
  ids: [
    ['ubuntu.build_s', 's'],
    ['ubuntu.size_mb', 'MB'],
    ['ubuntu.request_to_ssh_ms', 'ms'],
  ],
  run: measure,
};

// `node bench/ubuntu.ts`: this group alone, without building dist/skyhost first.
if (import.meta.main) {
  const ctx: BenchContext = { root: ROOT, cacheDir: path.join(ROOT, '.cache', 'bench'), say: (m) => process.stderr.write(`bench: ${m}\n`) };
  for (const f of await ubuntuGroup.run(ctx)) console.log(`${f.id}\t${f.value} ${f.unit}\t${f.note ?? ''}`);
}
