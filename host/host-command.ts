import type { Command } from '../base/cli.ts';
import { HOST_PACKAGES } from '../base/packages.ts';
import { describeSetup, hostSetup, TEST_PACKAGES } from './hostsetup.ts';

export const hostSetupCommand: Command = {
  name: 'host setup',
  summary: 'install and start what a host needs (libvirt, QEMU, qemu-img, xorriso); idempotent',
  description:
    'Installs missing packages with apt, starts libvirtd and virtlogd, and tests whether KVM really\n' +
    'works by booting a tiny guest (falling back to TCG). Prints one line when nothing needed doing.',
  flags: {
    'with-test-tools': { type: 'boolean', help: 'also install what the test suite needs (GRUB, OVMF, Avahi, chromium, a guest kernel)' },
  },
  async run(ctx) {
    const withTestTools = ctx.flags['with-test-tools'] === true;
    const result = await hostSetup({ withTestTools, log: ctx.log });
    ctx.print(describeSetup(result, HOST_PACKAGES.length + (withTestTools ? TEST_PACKAGES.length : 0)));
    return 0;
  },
};
