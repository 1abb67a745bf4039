// base/exec.ts: the one way SkyHost runs a subprocess, whole-output and streaming, on real processes.
import { expect } from 'chai';
import { CommandFailed, SkyError } from '../../base/errors.ts';
import { run, runStreaming } from '../../base/exec.ts';

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('subprocesses (base/exec.ts)', () => {
  it('run: output with LC_ALL=C, arguments never seen by a shell', async () => {
    const r = await run('sh', ['-c', 'printf "%s|%s" "$LC_ALL" "$1"', 'sh', '$(echo no); rm -rf /']);
    expect(r.stdout).to.equal('C|$(echo no); rm -rf /');
  });

  it('runStreaming: every line as it comes, from both streams, split at \\n and \\r, the last one without a newline too', async () => {
    const lines: string[] = [];
    const r = await runStreaming('sh', ['-c', 'printf "a\\nb\\r50%%\\r100%%\\n" ; printf "warn\\n" >&2; printf "$LC_ALL end"'], {
      onLine: (line, stream) => void lines.push(`${stream}:${line}`),
    });
    expect(lines.filter((l) => l.startsWith('stdout:'))).to.deep.equal(['stdout:a', 'stdout:b', 'stdout:50%', 'stdout:100%', 'stdout:C end']);
    expect(lines).to.include('stderr:warn');
    expect(r).to.include({ stderr: 'warn', exitCode: 0, stopped: false });
  });

  it('runStreaming: a failure is the same CommandFailed as run, with the command, arguments, exit code and stderr', async () => {
    const err = await rejection(runStreaming('sh', ['-c', 'echo disk full >&2; exit 3'], { onLine: () => undefined }));
    expect(err).to.be.instanceOf(CommandFailed);
    expect(err).to.include({ command: 'sh', exitCode: 3, stderr: 'disk full' });
    expect((err as CommandFailed).args).to.deep.equal(['-c', 'echo disk full >&2; exit 3']);
    const missing = await rejection(runStreaming('no-such-tool-skyhost', [], { onLine: () => undefined }));
    expect(missing).to.include({ code: 'missing_tool', status: 503 });
  });

  it('runStreaming: onLine can end the process early (a marker seen), and an abort cancels it with a 499', async () => {
    const t0 = Date.now();
    const r = await runStreaming('sh', ['-c', 'echo booting; echo READY; exec sleep 30'], { onLine: (line) => (line === 'READY' ? 'stop' : undefined) });
    expect(r.stopped).to.equal(true);
    expect(Date.now() - t0).to.be.below(10_000);
    const err = await rejection(runStreaming('sleep', ['30'], { onLine: () => undefined, signal: AbortSignal.timeout(200) }));
    expect(err).to.be.instanceOf(SkyError).and.include({ status: 499, code: 'cancelled' });
  });
});
