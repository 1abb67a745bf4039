// runStreaming with processGroup: cancelling ends the command and every process it started (a build's
// mmdebstrap and apt under `skyhost template build`), not the command alone.
import { expect } from 'chai';
import { run, runStreaming } from '../../base/exec.ts';

describe('runStreaming: a process group ends as a whole when cancelled', function () {
  this.timeout(15_000);

  it('kills the children too, and settles as cancelled once the group has ended', async () => {
    const marker = `sleep 60.${process.pid}`;
    const abort = new AbortController();
    // a child that ignores SIGTERM outlives its parent's end unless the group gets SIGKILL
    const running = runStreaming('sh', ['-c', `(trap '' TERM; ${marker}) & echo started; wait`], {
      processGroup: true, signal: abort.signal, timeout: 0,
      onLine: (line) => { if (line === 'started') setTimeout(() => abort.abort(), 200); },
    });
    const err = await running.then(() => undefined, (e: { status: number; code: string }) => e);
    expect(err).to.include({ status: 499, code: 'cancelled' });
    expect((await run('pgrep', ['-f', marker], { okCodes: [1] })).stdout).to.equal('');
  });
});
