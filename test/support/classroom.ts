// The controller's services for tests without HTTP (a fresh data folder, logging silenced), and classes
// made through them: their teacher and students get accounts (where they have none yet), each with the
// password `password(name)`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { configureLogging, logger } from '../../base/log.ts';
import { createServices, type ControllerServices, type ServicesOptions } from '../../server/services.ts';

/** The password a test account made here has. */
export const password = (name: string) => `${name}-password-1`;

/** A class with its teacher and students (accounts made as needed), through the Classes service; returns its id. */
export async function makeClass(services: ControllerServices, name: string, teacher: string, students: string[]): Promise<string> {
  for (const [user, role] of [[teacher, 'teacher'], ...students.map((s) => [s, 'student'])] as Array<[string, 'teacher' | 'student']>) {
    if (!services.users.get(user)) await services.users.create({ name: user, password: password(user), role });
  }
  const cls = services.classes.create({ name, teachers: [teacher] }, 'admin');
  for (const s of students) services.classes.addMember(cls.id, s, 'student', 'admin');
  return cls.id;
}

/**
 * The controller's services over a data folder of their own, with logging silenced (and no log lines
 * captured into the event log) until `close()`, which stops them, restores logging to stderr and removes
 * the folder. `open()` again after `stop()` is a controller restart on the same data.
 */
export class TestServices {
  readonly dir: string;
  private current: ControllerServices | undefined;

  constructor(prefix = 'skyhost-services-') {
    configureLogging({ out: () => {} });
    this.dir = mkdtempSync(path.join(tmpdir(), prefix));
  }

  /** Creates the services (not started: `services.start()` starts their timers). */
  async open(opts: Omit<ServicesOptions, 'dataDir' | 'log'> = {}): Promise<ControllerServices> {
    this.current = await createServices({ dataDir: this.dir, log: logger('test'), captureLogs: false, ...opts });
    return this.current;
  }

  async stop(): Promise<void> {
    await this.current?.stop();
    this.current = undefined;
  }

  async close(): Promise<void> {
    await this.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(this.dir, { recursive: true, force: true });
  }
}
