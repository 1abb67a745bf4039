// mocha's spec reporter plus, at the end, the slowest test files by wall time (hooks included: starting
// controllers, agents, VMs, Chromium) and one closing line in the plain form CI tools read:
// "N passed, N failed, N skipped". SKYHOST_SLOWEST=n lists n files (default 15, 0 for none).
'use strict';
const path = require('node:path');
const Mocha = require('mocha');
const { Spec } = Mocha.reporters;
const { EVENT_RUN_END, EVENT_SUITE_BEGIN, EVENT_SUITE_END, EVENT_TEST_END } = Mocha.Runner.constants;

class SkyhostReporter extends Spec {
  constructor(runner, options) {
    super(runner, options);
    const files = new Map(); // file -> { ms, tests }
    const started = new Map(); // top-level suite -> start time
    const entry = (file) => {
      let e = files.get(file);
      if (!e) files.set(file, (e = { ms: 0, tests: 0 }));
      return e;
    };
    // A file's time is the sum of its top-level suites, from their first hook to their last.
    runner.on(EVENT_SUITE_BEGIN, (suite) => {
      if (suite.parent?.root && suite.file) started.set(suite, performance.now());
    });
    runner.on(EVENT_SUITE_END, (suite) => {
      const t0 = started.get(suite);
      if (t0 === undefined) return;
      started.delete(suite);
      entry(suite.file).ms += performance.now() - t0;
    });
    runner.on(EVENT_TEST_END, (test) => {
      if (test.file) entry(test.file).tests += 1;
    });
    runner.once(EVENT_RUN_END, () => {
      const s = this.stats;
      const count = Number(process.env.SKYHOST_SLOWEST ?? 15);
      if (count > 0 && files.size > 0) {
        const slowest = [...files].sort((a, b) => b[1].ms - a[1].ms).slice(0, count);
        const total = [...files.values()].reduce((sum, e) => sum + e.ms, 0);
        process.stdout.write(`\n  slowest files (wall time with hooks; ${(total / 1000).toFixed(0)} s in ${files.size} files):\n`);
        for (const [file, e] of slowest) {
          const name = path.relative(process.cwd(), file);
          process.stdout.write(`  ${(e.ms / 1000).toFixed(1).padStart(7)} s  ${String(e.tests).padStart(3)} test${e.tests === 1 ? ' ' : 's'}  ${name}\n`);
        }
        process.stdout.write('\n');
      }
      process.stdout.write(`${s.passes} passed, ${s.failures} failed, ${s.pending} skipped\n`);
    });
  }
}
module.exports = SkyhostReporter;
