// A stand-in for releases.ubuntu.com on loopback: RELEASE/SHA256SUMS and the live-server ISO (a
// file the test gives, e.g. the stand-in ISO), streamed slowly enough that progress can be seen.
// `corrupt` flips one byte of the ISO on the way, so that the SHA256SUMS check must catch it.
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { close, listen } from '../../base/http.ts';

export interface FakeMirror {
  url: string;
  /** The ISO's name on the mirror, e.g. ubuntu-24.04.1-live-server-amd64.iso */
  name: string;
  sha256: string;
  /** Paths requested so far. */
  requests: string[];
  close(): Promise<void>;
}

export async function startFakeMirror(opts: { iso: string; release?: '22.04' | '24.04'; corrupt?: boolean; bytesPerTick?: number }): Promise<FakeMirror> {
  const release = opts.release ?? '24.04';
  const name = `ubuntu-${release}.1-live-server-amd64.iso`;
  const sha256 = createHash('sha256').update(readFileSync(opts.iso)).digest('hex');
  const size = statSync(opts.iso).size;
  const sums = [
    `${'0'.repeat(64)} *ubuntu-${release}-desktop-amd64.iso`,
    `${'1'.repeat(64)} *ubuntu-${release}-live-server-amd64.iso`,
    `${sha256} *${name}`,
  ].join('\n') + '\n';
  const requests: string[] = [];
  const perTick = opts.bytesPerTick ?? 2 * 1024 * 1024;
  const server: Server = createServer((req, res) => {
    requests.push(req.url ?? '');
    if (req.url === `/${release}/SHA256SUMS`) {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end(sums);
      return;
    }
    if (req.url !== `/${release}/${name}`) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) });
    let sent = 0;
    const stream = createReadStream(opts.iso, { highWaterMark: perTick });
    stream.on('data', (chunk) => {
      const buf = chunk as Buffer;
      if (opts.corrupt && sent === 0) buf[100] = buf[100]! ^ 0xff;
      sent += buf.length;
      stream.pause();
      res.write(buf, () => setTimeout(() => stream.resume(), 20));
    });
    stream.on('end', () => res.end());
    stream.on('error', () => res.destroy());
  });
  const port = await listen(server, 0, '127.0.0.1');
  return { url: `http://127.0.0.1:${port}`, name, sha256, requests, close: () => close(server) };
}
