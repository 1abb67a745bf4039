// Ubuntu's md5sum.txt (`MD5  ./path` per line), checked by "Check disc for defects" and casper's
// integrity check: entries of the files the remaster changes or adds are replaced, the rest kept.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export function md5(data: string | Buffer): string {
  return createHash('md5').update(data).digest('hex');
}

export async function md5File(file: string): Promise<string> {
  const hash = createHash('md5');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** md5sum.txt with `changed` (ISO path such as `/nocloud/user-data` -> md5) updated or appended. */
export function updateMd5Sums(text: string, changed: ReadonlyMap<string, string>): string {
  const rel = (isoPath: string) => '.' + (isoPath.startsWith('/') ? isoPath : '/' + isoPath);
  const wanted = new Map([...changed].map(([p, sum]) => [rel(p), sum]));
  const kept = text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .filter((line) => !wanted.has(line.replace(/^[0-9a-f]{32}\s+\*?/, '')));
  const added = [...wanted].map(([p, sum]) => `${sum}  ${p}`);
  return [...kept, ...added].join('\n') + '\n';
}

/** Parses md5sum.txt into ISO path (`/boot/grub/grub.cfg`) -> md5. */
export function parseMd5Sums(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{32})\s+\*?\.(\/.*)$/.exec(line.trim());
    if (m) out.set(m[2]!, m[1]!);
  }
  return out;
}
