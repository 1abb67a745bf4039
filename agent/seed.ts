// The cloud-init NoCloud seed of a VM: an ISO 9660 image with volume label `cidata` holding
// `meta-data` and `user-data` (SSH key, the request's own #cloud-config), built with xorriso.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { run } from '../base/exec.ts';
import { parseUserData } from '../wire/cloud-init.ts';

export { parseUserData };

export interface SeedInput {
  instanceId: string;
  hostname: string;
  sshKey?: string;
  /** The user created for the SSH key (with sudo), as well as the image's default user. */
  sshUser?: string;
  /** The request's extra #cloud-config (YAML), merged under SkyHost's keys. */
  userData?: string;
}

/** The user-data document: the request's cloud-config plus the hostname and SSH key. */
export function userDataDocument(input: SeedInput): string {
  const config: Record<string, unknown> = { ...parseUserData(input.userData) };
  config.hostname = input.hostname;
  if (input.sshKey) {
    const keys = Array.isArray(config.ssh_authorized_keys) ? (config.ssh_authorized_keys as unknown[]) : [];
    config.ssh_authorized_keys = [...keys, input.sshKey];
    if (input.sshUser) {
      const users = Array.isArray(config.users) ? (config.users as unknown[]) : ['default'];
      config.users = [...users, { name: input.sshUser, sudo: 'ALL=(ALL) NOPASSWD:ALL', shell: '/bin/sh', ssh_authorized_keys: [input.sshKey] }];
    }
  }
  return '#cloud-config\n' + stringify(config);
}

export function metaDataDocument(input: SeedInput): string {
  return stringify({ 'instance-id': input.instanceId, 'local-hostname': input.hostname });
}

/** Writes the seed ISO to `out` (volume label `cidata`, Joliet + Rock Ridge). */
export async function buildSeedIso(out: string, input: SeedInput): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'skyhost-seed-'));
  try {
    await writeFile(path.join(dir, 'user-data'), userDataDocument(input));
    await writeFile(path.join(dir, 'meta-data'), metaDataDocument(input));
    // Not -quiet: when xorriso gives up ("ABORT : Wait the normal burning time…") the reason is the
    // line before, and CommandFailed carries stderr only if xorriso was allowed to write it.
    await run('xorriso', ['-as', 'mkisofs', '-output', out, '-volid', 'cidata', '-joliet', '-rock', dir]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
