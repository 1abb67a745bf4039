// What the agent keeps between starts: the cluster it enrolled with (DATA/enrollment.json), and the
// join token the USB installer may leave in a file.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { Logger } from '../../base/log.ts';
import { ClusterId } from '../../wire/mdns.ts';

/** A join token left in a file. (The USB installer puts `joinToken` in /etc/skyhost/config.yaml, read as config.) */
export const JOIN_TOKEN_FILE = '/etc/skyhost/join-token';

/** The join token: `--join-token` / config `joinToken`, else JOIN_TOKEN_FILE. */
export function readJoinToken(configured: string | undefined, file = JOIN_TOKEN_FILE): string | undefined {
  if (configured) return configured;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined; // no file is the usual case; without a token the controller keeps the host pending and says so
  }
  const token = text.trim();
  return token.length >= 8 ? token : undefined;
}

const Remembered = z.object({
  clusterId: ClusterId, url: z.string(), agentUrl: z.string(), enrolledAt: z.string(),
  /** sha256 of the controller's certificate: pinned from the first enrollment over https:// on. */
  fingerprint: z.string().regex(/^[0-9a-f]{64}$/).optional(),
});
/** The cluster this agent belongs to, its controller's URL (and certificate) and our URL as last enrolled. */
export type Remembered = z.infer<typeof Remembered>;

export function enrollmentFile(dataDir: string): string {
  return path.join(dataDir, 'enrollment.json');
}

/** DATA/enrollment.json, or undefined when there is none (a new host) or it cannot be read (said in the log). */
export function loadRemembered(dataDir: string, log?: Logger): Remembered | undefined {
  const file = enrollmentFile(dataDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log?.warn(`cannot read ${file}: enrolling as a host of no cluster yet`, { err });
    return undefined;
  }
  try {
    return Remembered.parse(JSON.parse(text));
  } catch (err) {
    log?.warn(`${file} is not an enrollment record: enrolling as a host of no cluster yet`, { err: (err as Error).message });
    return undefined;
  }
}

/** Writes DATA/enrollment.json atomically (0600). */
export function saveRemembered(dataDir: string, r: Remembered): void {
  mkdirSync(dataDir, { recursive: true });
  const file = enrollmentFile(dataDir);
  writeFileSync(file + '.tmp', JSON.stringify(r, null, 2) + '\n', { mode: 0o600 });
  renameSync(file + '.tmp', file);
}
