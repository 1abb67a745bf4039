// Group `template`: the debian-12 template of `skyhost template build debian-12`. How long a build
// takes when the packages are already downloaded (the image cache is bypassed, the package cache
// is not) and how big the image is. `vm.request_to_ssh_ms` (reported by the `vm` group, whose name
// its id carries) is measured here too: a VM of it from the request to a real SSH login
// (controller + real agent in their own processes, QEMU under TCG, OpenSSH client).
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { buildDistroImage, distroRecipe } from '../agent/debian-template.ts';
import { run } from '../base/exec.ts';
import type { BenchContext, Group } from './group.ts';
import { requestVmWithSsh, waitUntil, withRealAgent } from './processes.ts';
import { figure, msSince, type Figure } from './stats.ts';

const TEMPLATE = 'bench-debian';

export const templateGroup: Group = {
  name: 'template',
  ids: [
    ['template.build_s', 's'],
    ['template.size_mb', 'MB'],
  ],
  async run(ctx) {
    const recipe = await distroRecipe('debian-12');
    // the first build fills the package cache (and the image cache the suite uses) if this machine has none
    const first = await buildDistroImage(recipe, { onProgress: (s, d) => ctx.say(`template: ${s}: ${d}`) });
    const t0 = process.hrtime.bigint();
    const warm = await buildDistroImage(recipe, { rebuild: true, onProgress: (s, d) => ctx.say(`template (warm packages): ${s}: ${d}`) });
    const buildS = msSince(t0) / 1000;
    return [
      figure('template.build_s', 's', [buildS], {
        note: `debian-12 (${recipe.packages.length} packages named, mmdebstrap unshare mode) with every package already downloaded: install, ext4, compressed qcow2; 1 run${first.cached ? '' : ' (after a cold build)'}`,
      }),
      figure('template.size_mb', 'MB', [statSync(warm.disk).size / 1e6], {
        note: `disk.qcow2 (compressed; ${recipe.sizeGiB} GiB as the VM sees it before it grows) + kernel ${(statSync(warm.kernel).size / 1e6).toFixed(1)} MB + initrd ${(statSync(warm.initrd).size / 1e6).toFixed(1)} MB`,
      }),
    ];
  },
};

/** `vm.request_to_ssh_ms`: a debian-12 VM requested through the controller until `ssh debian@` succeeds. */
export async function requestToSshFigures(ctx: BenchContext): Promise<Figure[]> {
  const recipe = await distroRecipe('debian-12');
  const warm = await buildDistroImage(recipe, { onProgress: (s, d) => ctx.say(`template: ${s}: ${d}`) });
  const template = { name: TEMPLATE, kernel: warm.kernel, initrd: warm.initrd, disk: warm.disk, cmdline: warm.cmdline, os: 'debian', minMemoryMiB: recipe.minMemoryMiB };
  return withRealAgent(ctx, { hostIdPrefix: 'bench-tpl', template }, async ({ api, dataDir }) => {
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dataDir, 'key')]);
    const t1 = process.hrtime.bigint();
    const { id, port } = await requestVmWithSsh(api, {
      name: 'bench-debian-1', template: TEMPLATE, memoryMiB: 512, sshKey: readFileSync(path.join(dataDir, 'key.pub'), 'utf8').trim(),
    });
    await waitUntil('an SSH login', 600_000, async () => {
      const r = await run('ssh', ['-i', path.join(dataDir, 'key'), '-p', String(port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
        '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR', 'debian@127.0.0.1', 'true'], { timeout: 30_000 })
        .then(() => true, () => false); // not up yet: sshd not listening or the key not installed yet
      return r;
    }, 1000);
    const sshMs = msSince(t1);
    ctx.say(`template: SSH login to VM ${id} after ${Math.round(sshMs)} ms`);
    const figures = [figure('vm.request_to_ssh_ms', 'ms', [sshMs], {
      note: 'debian-12 under TCG, 1 vCPU, 512 MiB: POST /api/vms (controller + real agent processes) to `ssh debian@` through the agent\'s forwarded port succeeding (tried every second); 1 run',
    })];
    await api('DELETE', `/api/vms/${id}`);
    return figures;
  });
}
