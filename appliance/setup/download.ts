// Fetching the official Ubuntu Server ISO from a mirror (default https://releases.ubuntu.com, or a
// school's own): read RELEASE/SHA256SUMS, pick the newest point release of the live-server ISO,
// download it beside a `.partial` name while hashing, and keep it only if the sha256 matches.
// A verified ISO is kept in the cache folder and reused next time.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { SkyError, Unavailable } from '../../base/errors.ts';
import type { Release } from '../../autoinstall/index.ts';

export interface DownloadProgress {
  bytes: number;
  /** From Content-Length; 0 when the mirror does not say. */
  total: number;
}

export interface DownloadOptions {
  /** Base URL, e.g. `https://releases.ubuntu.com` (files are at MIRROR/RELEASE/...). */
  mirror: string;
  release: Release;
  /** Cache folder for ISOs. */
  dir: string;
  onProgress?: (p: DownloadProgress) => void;
  /** Give up when no byte arrives for this long (default 60 s). */
  stallMs?: number;
  signal?: AbortSignal;
}

export interface DownloadedIso {
  file: string;
  name: string;
  sha256: string;
  /** True when a verified copy was already in the cache. */
  reused: boolean;
}

/** The newest live-server ISO of `release` listed in a SHA256SUMS file, e.g. `ubuntu-24.04.1-live-server-amd64.iso`. */
export function pickIso(sums: string, release: Release): { name: string; sha256: string } | undefined {
  const re = new RegExp(`^([0-9a-fA-F]{64}) [ *](ubuntu-${release.replace('.', '\\.')}(?:\\.(\\d+))?-live-server-amd64\\.iso)$`);
  let best: { name: string; sha256: string; point: number } | undefined;
  for (const line of sums.split(/\r?\n/)) {
    const m = re.exec(line.trim());
    if (!m) continue;
    const point = m[3] ? Number(m[3]) : 0;
    if (!best || point > best.point) best = { name: m[2]!, sha256: m[1]!.toLowerCase(), point };
  }
  return best && { name: best.name, sha256: best.sha256 };
}

export async function downloadUbuntuIso(o: DownloadOptions): Promise<DownloadedIso> {
  const base = `${o.mirror.replace(/\/+$/, '')}/${o.release}`;
  const sumsText = await fetchText(`${base}/SHA256SUMS`, o);
  const pick = pickIso(sumsText, o.release);
  if (!pick) throw new Unavailable(`${base}/SHA256SUMS lists no ubuntu-${o.release}*-live-server-amd64.iso: is this an Ubuntu releases mirror?`, undefined, 'no_iso_on_mirror');
  mkdirSync(o.dir, { recursive: true });
  const file = path.join(o.dir, pick.name);
  const marker = `${file}.sha256`;
  if (existsSync(file) && existsSync(marker) && readFileSync(marker, 'utf8').trim() === pick.sha256) {
    const size = statSync(file).size;
    o.onProgress?.({ bytes: size, total: size });
    return { file, name: pick.name, sha256: pick.sha256, reused: true };
  }
  const partial = `${file}.partial`;
  try {
    const got = await fetchToFile(`${base}/${pick.name}`, partial, o);
    if (got !== pick.sha256) {
      throw new SkyError(502, 'checksum_mismatch',
        `the downloaded ${pick.name} does not match the mirror's SHA256SUMS (got ${got.slice(0, 12)}..., expected ${pick.sha256.slice(0, 12)}...): the download was damaged; try again or use another mirror`);
    }
    renameSync(partial, file);
    writeFileSync(marker, pick.sha256 + '\n');
    return { file, name: pick.name, sha256: pick.sha256, reused: false };
  } finally {
    rmSync(partial, { force: true });
  }
}

/** A fetch that gives up after `stallMs` without data, with the URL in every error. */
async function startFetch(url: string, o: DownloadOptions): Promise<{ res: Response; stall: () => void; done: () => void }> {
  const controller = new AbortController();
  const stallMs = o.stallMs ?? 60_000;
  let timer = setTimeout(() => controller.abort(), stallMs);
  const stall = () => {
    clearTimeout(timer);
    timer = setTimeout(() => controller.abort(), stallMs);
  };
  const done = () => clearTimeout(timer);
  const onAbort = () => controller.abort();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let res: Response;
  try {
    res = await fetch(url, { signal: controller.signal, redirect: 'follow' });
  } catch (e) {
    done();
    throw new Unavailable(`cannot reach ${url}: ${describeFetchError(e, controller.signal.aborted, stallMs)}`, undefined, 'download_failed');
  }
  if (!res.ok) {
    done();
    throw new Unavailable(`${url} answered ${res.status} ${res.statusText}`, undefined, 'download_failed');
  }
  return { res, stall, done };
}

function describeFetchError(e: unknown, aborted: boolean, stallMs: number): string {
  if (aborted) return `no data for ${Math.round(stallMs / 1000)} s`;
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (e as Error).message;
}

async function fetchText(url: string, o: DownloadOptions): Promise<string> {
  const { res, done } = await startFetch(url, o);
  try {
    return await res.text();
  } finally {
    done();
  }
}

/** Streams `url` into `file`, hashing as it goes; resolves to the sha256. */
async function fetchToFile(url: string, file: string, o: DownloadOptions): Promise<string> {
  const { res, stall, done } = await startFetch(url, o);
  const total = Number(res.headers.get('content-length')) || 0;
  const hash = createHash('sha256');
  const out = await open(file, 'w');
  let bytes = 0;
  try {
    if (!res.body) throw new Unavailable(`${url} sent no data`, undefined, 'download_failed');
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      stall();
      hash.update(chunk);
      await out.write(chunk);
      bytes += chunk.byteLength;
      o.onProgress?.({ bytes, total });
    }
  } catch (e) {
    if (e instanceof SkyError) throw e;
    throw new Unavailable(`downloading ${url} failed after ${bytes} bytes: ${(e as Error).message}`, undefined, 'download_failed');
  } finally {
    done();
    await out.close();
  }
  if (total && bytes !== total) throw new Unavailable(`downloading ${url} stopped after ${bytes} of ${total} bytes`, undefined, 'download_failed');
  return hash.digest('hex');
}
