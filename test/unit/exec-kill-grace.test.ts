// runStreaming with processGroup and killGraceMs: a cancelled group's cleanup that takes longer than the
// default 3 s is given the time asked for (the controller cancelling `skyhost template build`, which
// removes its work folder on SIGTERM), and the run settles as soon as the group has ended.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { runStreaming } from '../../base/exec.ts';

describe('runStreaming: the grace between SIGTERM and SIGKILL of a cancelled group', function () {
  this.timeout(20_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-grace-'));
  after(() => rmSync(work, { recursive: true, force: true }));

  /** A command that, on SIGTERM, takes `cleanupS` to clean up and then leaves `done`; the time it ran after the cancel. */
  async function cancelSlowCleanup(done: string, killGraceMs?: number, cleanupS = 4): Promise<number> {
    const abort = new AbortController();
    let at = 0;
    const running = runStreaming('sh', ['-c', `trap 'sleep ${cleanupS}; touch ${done}; exit 143' TERM; echo started; while :; do sleep 0.1; done`], {
      processGroup: true, signal: abort.signal, timeout: 0, ...(killGraceMs !== undefined ? { killGraceMs } : {}),
      onLine: (line) => { if (line === 'started') { at = performance.now(); abort.abort(); } },
    });
    const err = await running.then(() => undefined, (e: { code: string }) => e);
    expect(err).to.include({ code: 'cancelled' });
    return performance.now() - at;
  }

  it('kills a cleanup longer than the default 3 s', async () => {
    const done = path.join(work, 'default');
    // a cleanup of 8 s, not 4: a SIGKILL due at 3 s that a loaded machine sends late still comes first
    const ms = await cancelSlowCleanup(done, undefined, 8);
    expect(existsSync(done)).to.equal(false);
    expect(ms).to.be.below(8000); // ended by the kill, not by the cleanup
  });

  it('lets the cleanup finish within killGraceMs, and settles once it has', async () => {
    const done = path.join(work, 'grace');
    const ms = await cancelSlowCleanup(done, 10_000);
    expect(existsSync(done)).to.equal(true);
    expect(ms).to.be.below(9000); // not the whole grace
  });
});
