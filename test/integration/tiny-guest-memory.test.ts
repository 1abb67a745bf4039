// The busybox template's advertised minimum memory is memory it boots in (QEMU under TCG, no libvirt):
// below it the kernel resets or panics, and a VM would reboot in a loop while libvirt says "running".
import { expect } from 'chai';
import { TINY_MIN_MEMORY_MIB } from '../../agent/tinyguest.ts';
import { runStreaming } from '../../base/exec.ts';
import { buildTestGuest } from '../support/guest.ts';

/** Boots the test guest with `memoryMiB` (its kernel as the template has it, the bzImage): whether the kernel handed over to init before QEMU stopped (it does not reboot). */
async function bootsToPrompt(memoryMiB: number): Promise<boolean> {
  const guest = await buildTestGuest();
  const r = await runStreaming('qemu-system-x86_64', [
    '-accel', 'tcg', '-m', String(memoryMiB), '-nographic', '-no-reboot', '-nodefaults', '-serial', 'stdio',
    '-kernel', guest.bzImage, '-initrd', guest.initrd, '-append', 'console=ttyS0 panic=-1', // not quiet: the kernel says when it runs init
  ], {
    timeout: 150_000,
    onLine: (line) => (line.includes('Run /init as init process') ? 'stop' : undefined),
    okCodes: [0, 1],
  });
  return r.stopped;
}

describe('the busybox guest\'s minimum memory', function () {
  this.timeout(330_000);

  it(`boots to its shell in the ${TINY_MIN_MEMORY_MIB} MiB the template advertises, and not in 64 MiB`, async () => {
    expect(await bootsToPrompt(TINY_MIN_MEMORY_MIB)).to.equal(true);
    expect(await bootsToPrompt(64)).to.equal(false);
  });
});
