// Putting this PC to sleep for the controller ("Put to sleep" on the hosts page): `POST /sleep`, behind
// the agent key, answers first and then runs the power-off command (config `powerOffCommand`, by
// default `systemctl poweroff`). The controller then shows the host `asleep`, and Wake-on-LAN brings
// it back (docs/design.md#host-states).
import type { Express } from 'express';
import { run } from '../base/exec.ts';
import type { Logger } from '../base/log.ts';

/** How this machine switches itself off. */
export interface PowerControl {
  /** The command line it runs (shown in the answer and the log). */
  readonly command: readonly string[];
  powerOff(): Promise<void>;
}

/** A power control that runs `command` (an argument array: never through a shell). */
export function commandPower(command: readonly string[]): PowerControl {
  if (command.length === 0 || !command[0]) throw new TypeError('the power-off command is empty');
  return {
    command,
    async powerOff() {
      await run(command[0]!, command.slice(1), { timeout: 60_000 });
    },
  };
}

/** `systemctl poweroff` as config `powerOffCommand` gives it: words split on spaces (no quoting, no shell). */
export function parsePowerCommand(text: string): string[] {
  return text.trim().split(/\s+/).filter(Boolean);
}

/** Milliseconds between the answer and the power-off, so that the answer reaches the controller first. */
const ANSWER_FIRST_MS = 300;

/** `POST /sleep` on the agent's app (after its key check): 202, then the power-off. No power control: 404. */
export function powerRoutes(app: Express, power: PowerControl | undefined, log: Logger): void {
  app.post('/sleep', (_req, res) => {
    if (!power) {
      res.status(404).json({ error: { code: 'not_found', message: 'this agent cannot switch its machine off' } });
      return;
    }
    log.warn(`switching this machine off at the controller's request (${power.command.join(' ')})`);
    res.status(202).json({ sleeping: true, command: power.command.join(' ') });
    setTimeout(() => {
      power.powerOff().catch((err: unknown) => log.error('the power-off command failed: this machine stays on', { err }));
    }, ANSWER_FIRST_MS).unref();
  });
}
