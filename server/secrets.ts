// The controller's secrets in DATA/secrets (mode 0600): the admin API token (also the admin's
// one-time first password) and the cluster join token; and the cluster id, made once.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface ControllerSecrets {
  adminToken: string;
  joinToken: string;
  clusterId: string;
  adminTokenFile: string;
  joinTokenFile: string;
  /** True when this start created them (first start). */
  created: boolean;
}

function readOrCreate(file: string, make: () => string): { value: string; created: boolean } {
  if (existsSync(file)) {
    const value = readFileSync(file, 'utf8').trim();
    if (value) return { value, created: false };
  }
  const value = make();
  writeFileSync(file, value + '\n', { mode: 0o600 });
  chmodSync(file, 0o600);
  return { value, created: true };
}

/** Reads DATA/secrets/{admin-token,join-token,cluster-id}, creating what is missing. */
export function ensureSecrets(dataDir: string): ControllerSecrets {
  const dir = path.join(dataDir, 'secrets');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const adminTokenFile = path.join(dir, 'admin-token');
  const joinTokenFile = path.join(dir, 'join-token');
  const admin = readOrCreate(adminTokenFile, () => 'sha_' + randomBytes(24).toString('base64url'));
  const join = readOrCreate(joinTokenFile, () => 'shj_' + randomBytes(24).toString('base64url'));
  const cluster = readOrCreate(path.join(dir, 'cluster-id'), () => randomBytes(8).toString('hex'));
  return {
    adminToken: admin.value,
    joinToken: join.value,
    clusterId: cluster.value,
    adminTokenFile,
    joinTokenFile,
    created: admin.created || join.created,
  };
}
