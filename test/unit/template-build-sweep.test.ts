// What a `template build` killed hard (SIGKILL, power cut) leaves in the build cache is swept by the next
// build: a `.build-*` work folder whose owner (pid, boot, start time) is gone, or one without an owner
// file older than a day. A folder of a build still running, and anything that is not a work folder, stay.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { abandonedWorkFolders, ownerAlive, sweepAbandonedBuilds, thisBuildOwner, type BuildOwner } from '../../agent/debian-template.ts';
import type { Logger } from '../../base/log.ts';

const HOUR = 3600_000;
const NOW = Date.parse('2026-12-02T06:00:00Z');
const alive = (o: BuildOwner) => o.pid === 100;

describe('template build: sweeping abandoned work folders', () => {
  it('should pick the folders whose owner is gone, and ownerless ones older than a day', () => {
    const owner = (pid: number): BuildOwner => ({ pid, bootId: 'b', startTicks: 1 });
    const gone = abandonedWorkFolders([
      { name: '.build-debian-bookworm-aaa-1', owner: owner(100), mtimeMs: NOW - 48 * HOUR }, // running, however old
      { name: '.build-debian-bookworm-aaa-2', owner: owner(200), mtimeMs: NOW - 1000 }, // its owner died a second ago
      { name: '.build-debian-bookworm-aaa-3', mtimeMs: NOW - 25 * HOUR }, // no owner file, older than a day
      { name: '.build-debian-bookworm-aaa-4', mtimeMs: NOW - 2 * HOUR }, // no owner file yet: may be starting now
      { name: 'debian-bookworm-aaa', owner: owner(200), mtimeMs: NOW - 48 * HOUR }, // a built image, not a work folder
    ], alive, NOW);
    expect(gone).to.deep.equal(['.build-debian-bookworm-aaa-2', '.build-debian-bookworm-aaa-3']);
  });

  it('should know this process as alive, and a process that has ended or another boot\'s as gone', () => {
    const me = thisBuildOwner();
    expect(me.pid).to.equal(process.pid);
    expect(ownerAlive(me)).to.equal(true);
    expect(ownerAlive({ ...me, bootId: 'another-boot' })).to.equal(false);
    expect(ownerAlive({ ...me, startTicks: me.startTicks + 1 })).to.equal(false); // the pid reused by another process
    const ended = spawnSync('true').pid!;
    expect(ownerAlive({ ...me, pid: ended })).to.equal(false);
  });

  it('should remove abandoned folders of a real cache and keep the rest', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-sweep-'));
    try {
      const folder = (name: string, owner?: BuildOwner, ageMs = 0) => {
        mkdirSync(path.join(dir, name, 'tmp', 'mmdebstrap.XXXX'), { recursive: true });
        writeFileSync(path.join(dir, name, 'root.tar'), 'half a tarball');
        if (owner) writeFileSync(path.join(dir, name, 'owner'), JSON.stringify(owner));
        const when = new Date(Date.now() - ageMs);
        utimesSync(path.join(dir, name), when, when);
      };
      const me = thisBuildOwner();
      folder('.build-k-running', me);
      folder('.build-k-killed', { ...me, pid: spawnSync('true').pid! });
      folder('.build-k-old', undefined, 25 * HOUR);
      folder('.build-k-new');
      writeFileSync(path.join(dir, '.build-k-file'), 'not a folder');
      mkdirSync(path.join(dir, 'debian-bookworm-k'));
      const lines: string[] = [];
      const log = { info: (msg: string) => void lines.push(msg) } as unknown as Logger;
      const removed = await sweepAbandonedBuilds(dir, { log });
      expect(removed.sort()).to.deep.equal(['.build-k-killed', '.build-k-old']);
      expect(readdirSync(dir).sort()).to.deep.equal(['.build-k-file', '.build-k-new', '.build-k-running', 'debian-bookworm-k']);
      expect(lines).to.have.length(2);
      expect(lines[0]).to.include('killed');
      expect(await sweepAbandonedBuilds(path.join(dir, 'no-such-folder'))).to.deep.equal([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(existsSync(dir)).to.equal(false);
  });
});
