// A clock the test moves (server/services.ts `Clock`): timers fire in order, each at its own time, as
// `advance` passes it; `now` starts where the test says.
//
//   const clock = new TestClock(Date.parse('2026-12-02T08:00:00Z'));
//   const services = await createServices({ ..., clock }); await clock.advance(45 * 60_000);
import type { Clock } from '../../server/services.ts';

export class TestClock implements Clock {
  t: number;
  private timers: { at: number; fn: () => void }[] = [];

  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const timer = { at: this.t + ms, fn };
    this.timers.push(timer);
    return timer;
  }

  clearTimeout(timer: unknown): void {
    this.timers = this.timers.filter((x) => x !== timer);
  }

  /** Resolves after `ms` of this clock's time. */
  sleep(ms: number): Promise<void> {
    return new Promise((r) => this.setTimeout(r, ms));
  }

  /** Moves time on by `ms`, firing the timers due on the way (letting the work they start set the next ones). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await new Promise((r) => setImmediate(r));
      const due = this.timers.filter((x) => x.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.timers = this.timers.filter((x) => x !== due);
      this.t = due.at;
      due.fn();
    }
    this.t = end;
  }
}
