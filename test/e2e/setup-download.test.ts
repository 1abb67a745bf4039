// Downloading Ubuntu for the web installer, against a stand-in mirror on loopback (no internet here):
// SHA256SUMS picks the newest point release and must match, a damaged download leaves nothing behind,
// a verified ISO is reused, an unreachable mirror is one clear sentence.
import { expect } from 'chai';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { close, listen } from '../../base/http.ts';
import { downloadUbuntuIso, type DownloadProgress } from '../../appliance/setup/download.ts';
import { startFakeMirror, type FakeMirror } from '../support/fake-ubuntu-mirror.ts';
import { writePatternFile } from '../support/loop-device.ts';

describe('Ubuntu ISO download (web installer and menu)', function () {
  this.timeout(60_000);
  let dir: string;
  let iso: string;
  const mirrors: FakeMirror[] = [];
  const mirror = async (o: { corrupt?: boolean } = {}) => {
    const m = await startFakeMirror({ iso, ...o });
    mirrors.push(m);
    return m;
  };

  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-download-'));
    iso = path.join(dir, 'source.iso');
    writePatternFile(iso, 9 * 1024 * 1024 + 7, 11);
  });
  after(async () => {
    for (const m of mirrors) await m.close();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('given a mirror whose SHA256SUMS matches the ISO', () => {
    it('should download with progress, check the sha256 and keep the ISO', async () => {
      const m = await mirror();
      const cache = path.join(dir, 'cache-ok');
      const seen: DownloadProgress[] = [];
      const got = await downloadUbuntuIso({ mirror: m.url, release: '24.04', dir: cache, onProgress: (p) => seen.push(p) });
      expect(got).to.include({ name: 'ubuntu-24.04.1-live-server-amd64.iso', sha256: m.sha256, reused: false });
      expect(seen.length).to.be.greaterThan(2);
      expect(seen.at(-1)).to.deep.equal({ bytes: 9 * 1024 * 1024 + 7, total: 9 * 1024 * 1024 + 7 });
      expect(readdirSync(cache).sort()).to.deep.equal([got.name, `${got.name}.sha256`]);
    });
    it('should reuse a verified ISO without downloading it again', async () => {
      const m = await mirror();
      const cache = path.join(dir, 'cache-reuse');
      await downloadUbuntuIso({ mirror: m.url, release: '24.04', dir: cache });
      const again = await downloadUbuntuIso({ mirror: m.url, release: '24.04', dir: cache });
      expect(again.reused).to.equal(true);
      expect(m.requests.filter((r) => r.endsWith('.iso'))).to.have.length(1);
    });
  });

  describe('given a download damaged on the way', () => {
    it('should refuse it with checksum_mismatch and leave no file behind', async () => {
      const m = await mirror({ corrupt: true });
      const cache = path.join(dir, 'cache-bad');
      const err = await downloadUbuntuIso({ mirror: m.url, release: '24.04', dir: cache }).catch((e) => e);
      expect(err.code).to.equal('checksum_mismatch');
      expect(err.message).to.contain('does not match the mirror\'s SHA256SUMS');
      expect(readdirSync(cache)).to.deep.equal([]);
    });
  });

  describe('given a mirror that is not an Ubuntu mirror, or none at all', () => {
    it('should say the release is not on the mirror', async () => {
      const m = await mirror();
      const err = await downloadUbuntuIso({ mirror: m.url, release: '22.04', dir: path.join(dir, 'c3') }).catch((e) => e);
      expect(err.message).to.contain('/22.04/SHA256SUMS answered 404');
    });
    it('should say it cannot reach a mirror that does not answer', async () => {
      const closed = createServer();
      const port = await listen(closed, 0, '127.0.0.1');
      await close(closed);
      const err = await downloadUbuntuIso({ mirror: `http://127.0.0.1:${port}`, release: '24.04', dir: path.join(dir, 'c4') }).catch((e) => e);
      expect(err.code).to.equal('download_failed');
      expect(err.message).to.equal(`cannot reach http://127.0.0.1:${port}/24.04/SHA256SUMS: ECONNREFUSED`);
    });
    it('should not trust a stale cached copy whose sha256 the mirror no longer lists', async () => {
      const m = await mirror();
      const cache = path.join(dir, 'cache-stale');
      await downloadUbuntuIso({ mirror: m.url, release: '24.04', dir: cache });
      writeFileSync(path.join(cache, `${m.name}.sha256`), '0'.repeat(64) + '\n');
      const again = await downloadUbuntuIso({ mirror: m.url, release: '24.04', dir: cache });
      expect(again.reused).to.equal(false);
      expect(existsSync(again.file)).to.equal(true);
    });
  });
});
