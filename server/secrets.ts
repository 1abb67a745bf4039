// The controller's secrets in DATA/secrets (mode 0600): the admin API token (also the admin's
// one-time first password) and the cluster join token; and the cluster id, made once.
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
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
  writeSecretFile(file, value + '\n');
  return { value, created: true };
}

/**
 * Replaces `file` with `content`, mode 0600, all or nothing: written to a temp file beside it,
 * synced, renamed over it, and the folder synced. On any failure (a full disk: ENOSPC) the temp file
 * is removed and `file` keeps its old content.
 */
export function writeSecretFile(file: string, content: string): void {
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fd = openSync(temp, 'wx', 0o600);
    try {
      const data = Buffer.from(content);
      for (let done = 0; done < data.length;) done += writeSync(fd, data, done);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
  } catch (err) {
    rmSync(temp, { force: true });
    throw err;
  }
  const dir = openSync(path.dirname(file), 'r');
  try {
    fsyncSync(dir); // the rename itself survives a power cut
  } finally {
    closeSync(dir);
  }
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
