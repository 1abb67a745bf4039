// A multi-step operation undoes itself on failure: push an undo step after each step that changed
// something, then either `success()` (forget them) or `fail()` (run them newest first).
import type { Logger } from '../base/log.ts';

export type Undo = () => Promise<unknown> | unknown;

export class Reverter {
  private steps: { what: string; undo: Undo }[] = [];
  private readonly log: Logger | undefined;

  constructor(log?: Logger) {
    this.log = log;
  }

  /** Records how to undo the step just done. */
  add(what: string, undo: Undo): void {
    this.steps.push({ what, undo });
  }

  /** The operation succeeded: the undo steps are dropped. */
  success(): void {
    this.steps = [];
  }

  /** Runs every undo step, newest first; an undo that fails is logged and the rest still run. */
  async fail(): Promise<void> {
    const steps = this.steps.reverse();
    this.steps = [];
    for (const s of steps) {
      try {
        await s.undo();
      } catch (err) {
        this.log?.error(`undo of "${s.what}" failed`, { err });
      }
    }
  }
}
