// The controller's services, made once and shared by the JSON API, the pages and the console proxy.
// Page routes take what they need from here (`app.locals.services` holds the same object):
//
//   services.users      accounts, sessions, API tokens, self-registration   (server/users/users.ts)
//   services.hosts      host registry: enroll, approve, drain, poll          (server/hosts/registry.ts)
//   services.history    each host's CPU and memory over the last hour        (server/hosts/history.ts)
//   services.vms        VM records and requests, per-user visibility         (server/vms/vms.ts)
//   services.templates  the catalog and templates across hosts              (server/templates/templates.ts)
//   services.events     event log; `events.on('event', fn)` for a live tail  (server/events/events.ts)
//   services.joinTokens cluster and single-use join tokens                   (server/tokens.ts)
//   services.classes    classes and their teachers and students              (server/classes/classes.ts)
//   services.access     who may see and act on which VM, by role and class   (server/classes/access.ts)
import path from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import type { Config } from '../base/config.ts';
import { logger, type Logger } from '../base/log.ts';
import { classAccess, type ClassAccess } from './classes/access.ts';
import { Classes } from './classes/classes.ts';
import { classRoster, SessionService } from './classes/sessions.ts';
import { nightlyBackup } from './db/backup.ts';
import { Store } from './db/store.ts';
import { EventLog } from './events/events.ts';
import { HostHistory } from './hosts/history.ts';
import { HostRegistry } from './hosts/registry.ts';
import type { Policy } from './scheduler/index.ts';
import { ensureSecrets, type ControllerSecrets } from './secrets.ts';
import { controllerIdentity } from './tls.ts';
import type { TlsIdentity } from '../base/tls.ts';
import { Catalog } from './templates/catalog.ts';
import { TemplateDistributor } from './templates/distribute.ts';
import { Templates } from './templates/templates.ts';
import { JoinTokens } from './tokens.ts';
import { Users, type User } from './users/users.ts';
import { Housekeeping } from './vms/housekeeping.ts';
import { PolicyStore } from './vms/leases.ts';
import { Quotas } from './vms/quotas.ts';
import { StartOnBootService } from './vms/start-on-boot.ts';
import { VmService } from './vms/vms.ts';
import { RoomPower } from './hosts/wake.ts';
import type { WakeSender } from './hosts/wol.ts';

export interface ServicesOptions {
  dataDir: string;
  log: Logger;
  schedulerPolicy?: Policy;
  /** Self-registration when the setting was never changed (config `selfRegistration`). */
  selfRegistration?: boolean;
  /** Seconds between polls of every agent (config `pollIntervalSeconds`, default 5). */
  pollIntervalSeconds?: number;
  pollTimeoutMs?: number;
  pollConcurrency?: number;
  /** How long VM creation waits for the agent before answering 202 (default 5000 ms). */
  answerWithinMs?: number;
  /** Record every log line of this process in the event log (default true). */
  captureLogs?: boolean;
  /** The timers polls run on (tests pass one they control). */
  clock?: Clock;
  /** A backup into DATA/backups/ every night at 03:00, kept this many days (config `backupKeepDays`); none when 0 or absent. */
  backupKeepDays?: number;
  /** Sends Wake-on-LAN packets (default: real UDP broadcasts; tests record them). */
  sendWake?: WakeSender;
}

export interface ControllerServices {
  store: Store;
  secrets: ControllerSecrets;
  clusterId: string;
  users: Users;
  hosts: HostRegistry;
  /** Each host's CPU and memory over the last hour, from the polls (server/hosts/history.ts). */
  history: HostHistory;
  vms: VmService;
  templates: Templates;
  events: EventLog;
  joinTokens: JoinTokens;
  /** Wake-on-LAN for the whole room, its wake-up schedule, drained hosts' VM shutdowns (server/hosts/wake.ts). */
  room: RoomPower;
  /** VMs started again when their host comes back (server/vms/start-on-boot.ts). */
  startOnBoot: StartOnBootService;
  /** Lease, housekeeping and default quota policies the admin sets (server/vms/leases.ts). */
  policies: PolicyStore;
  /** Quotas of users and classes, and usage against them (server/vms/quotas.ts). */
  quotas: Quotas;
  /** Lease warnings, shutdowns and deletions, and reaping of long-stopped VMs (server/vms/housekeeping.ts). */
  housekeeping: Housekeeping;
  classes: Classes;
  /** The role and class rules: canActOnVm, classesOf, teaches, studentsOf (server/classes/access.ts). */
  access: ClassAccess;
  /** Class sessions: one VM per student in one action, ended on time (server/classes/sessions.ts). */
  sessions: SessionService;
  /** Templates onto hosts: pulls for VMs, "keep on every host", "copy to all hosts" (server/templates/distribute.ts). */
  distribute: TemplateDistributor;
  /** The controller's own certificate (DATA/secrets/tls.crt, tls.key): agents pin its fingerprint (server/tls.ts). */
  tls: TlsIdentity;
  /** Starts the periodic jobs (polls, lease expiry). */
  start(): void;
  /** Stops the jobs and closes the database. */
  stop(): Promise<void>;
  /** The built-in system user periodic jobs act as. */
  system: User;
}

/** `servicesOptions(config, log)`: the options of `createServices` from the loaded configuration. */
export function servicesOptions(config: Config, log: Logger): ServicesOptions {
  return {
    dataDir: config.dataDir, log, schedulerPolicy: config.schedulerPolicy, selfRegistration: config.selfRegistration,
    pollIntervalSeconds: config.pollIntervalSeconds, backupKeepDays: config.backupKeepDays,
  };
}

/**
 * Opens `DATA/skyhost.db`, makes the secrets on first start (and says where they are), and builds
 * every service. Call `start()` to begin polling and `stop()` at shutdown.
 */
export async function createServices(opts: ServicesOptions): Promise<ControllerServices> {
  const log = opts.log;
  const secrets = ensureSecrets(opts.dataDir);
  const store = new Store(path.join(opts.dataDir, 'skyhost.db'));
  const events = new EventLog(store);
  const uncapture = opts.captureLogs === false ? () => {} : events.captureLogs();
  const users = new Users(store, { audit: (e) => events.record({ source: 'users', ...e }) });
  await users.ensureAdmin(secrets.adminToken);
  users.ensureToken('admin', 'admin token (DATA/secrets/admin-token)', secrets.adminToken);
  const classes = new Classes(store, { users, audit: (e) => events.record({ source: 'classes', ...e }) });
  users.onRemoved(() => classes.reload()); // SQLite removed the memberships (ON DELETE CASCADE)
  const access = classAccess(classes);
  if (store.get('SELECT 1 FROM settings WHERE key = ?', 'selfRegistration') === undefined) users.setSelfRegistration(opts.selfRegistration ?? false);
  if (secrets.created) {
    log.info(`first start: admin token in ${secrets.adminTokenFile}, join token in ${secrets.joinTokenFile} (both mode 0600); ` +
      'sign in as "admin" with the admin token as a one-time password', { clusterId: secrets.clusterId });
  } else {
    log.info(`admin token in ${secrets.adminTokenFile}, join token in ${secrets.joinTokenFile}`, { clusterId: secrets.clusterId });
  }
  const tls = await controllerIdentity(opts.dataDir, secrets.clusterId);
  const joinTokens = new JoinTokens({ dataDir: opts.dataDir, fingerprint: tls.fingerprint });
  const hosts = new HostRegistry(store, {
    clusterId: secrets.clusterId,
    redeemJoinToken: (token, hostId) => {
      const verdict = joinTokens.redeem(token, hostId);
      // A refused token is logged by the registry (with the sender); a used one is an audit event here.
      if (verdict.ok) {
        const which = verdict.kind === 'cluster' ? 'the cluster join token' : `single-use join token ${verdict.id}`;
        events.record({ source: 'tokens', msg: `${which} used by host ${hostId}`, hostId, data: { kind: verdict.kind, ...(verdict.id ? { tokenId: verdict.id } : {}) } });
      }
      return verdict;
    },
    log: logger('hosts'),
    ...(opts.pollTimeoutMs ? { pollTimeoutMs: opts.pollTimeoutMs } : {}),
    ...(opts.pollConcurrency ? { pollConcurrency: opts.pollConcurrency } : {}),
    ...(opts.sendWake ? { sendWake: opts.sendWake } : {}),
  });
  const history = new HostHistory().follow(hosts);
  const templates = new Templates(hosts, logger('templates'), new Catalog(opts.dataDir, { log: logger('templates') }));
  await templates.catalog.refresh();
  const distribute = new TemplateDistributor({ registry: hosts, store, log: logger('templates'), catalog: () => templates.catalog.snapshot(), controllerFingerprint: tls.fingerprint });
  const policies = new PolicyStore(store, logger('policies'));
  const quotas: Quotas = new Quotas({
    store, records: () => vms.all(), roleDefaults: () => policies.current().quota,
    audit: (msg, data) => events.record({ source: 'quotas', msg, data }),
  });
  const vms = new VmService(store, hosts, templates, {
    policies, quotas,
    distribute, log: logger('vms'), users, canAct: access.canActOnVm, ...(opts.schedulerPolicy ? { policy: opts.schedulerPolicy } : {}),
    ...(opts.answerWithinMs !== undefined ? { answerWithinMs: opts.answerWithinMs } : {}),
  });
  const system: User = { name: 'system', role: 'admin', mustChangePassword: false, createdAt: '1970-01-01T00:00:00.000Z' };
  const sessions = new SessionService({
    store, vms, users, templates, hosts, log: logger('sessions'), system, roster: classRoster(classes, access, users), policies, ...(opts.clock ? { clock: opts.clock } : {}),
  });
  templates.usedBy = (name) => vms.records(system).filter((v) => v.template === name).map((v) => v.name);
  events.names.vm = (id) => { const v = vms.require(system, id); return { name: v.name, owner: v.owner, hostId: v.hostId }; };
  const housekeeping = new Housekeeping({ vms, policies, record: (e) => events.record(e), log: logger('housekeeping') });
  const room = new RoomPower({
    store, hosts, log: logger('hosts'),
    shutdownVm: (id) => vms.action(system, id, 'shutdown'),
    runningVms: (hostId) => vms.records(system, { host: hostId, state: 'running' }),
  });
  sessions.room = room; // a class session wakes sleeping hosts for the students no awake host fits
  const startOnBoot = new StartOnBootService({ store, hosts, vms, system, log: logger('vms') });
  const tasks: ScheduledTask[] = [];
  const polls: Repeater[] = [];

  return {
    distribute,
    store, secrets, clusterId: secrets.clusterId, users, classes, access, sessions, hosts, history, vms, templates, events, joinTokens, tls, system, policies, quotas, housekeeping, room, startOnBoot,
    start() {
      const every = Math.max(1, opts.pollIntervalSeconds ?? 5);
      const clock = opts.clock ? { clock: opts.clock } : {};
      // Two loops: pending hosts (anyone may enroll one) never hold up the polls of approved hosts.
      const spreadMs = hosts.pollSpreadMs(every * 1000);
      polls.push(repeatEvery(every * 1000, () => hosts.pollMembers({ spreadMs }), { name: 'poll of the hosts', log, ...clock }));
      polls.push(repeatEvery(every * 1000, () => hosts.pollPending(), { name: 'poll of the pending hosts', log, ...clock }));
      // a template the CLI built or imported into DATA/templates joins the catalog by the next round
      polls.push(repeatEvery(every * 1000, async () => void await templates.catalog.refresh(), { name: "reading the templates' folder", log, ...clock }));
      tasks.push(cron.schedule('30 * * * * *', async () => {
        hosts.persistLastSeen();
        users.pruneSessions();
        vms.pruneIdempotencyKeys();
        await housekeeping.sweep(new Date());
      }, { name: 'housekeeping', noOverlap: true }));
      sessions.startTimer(); // sessions whose end passed while the controller was off end now
      room.start();
      const keepDays = opts.backupKeepDays ?? 0;
      if (keepDays > 0) {
        tasks.push(cron.schedule('0 3 * * *', async () => {
          try {
            await nightlyBackup({ dataDir: opts.dataDir, keepDays, log });
          } catch (err) {
            log.error('nightly backup failed; the older backups are kept', { err });
          }
        }, { name: 'nightly backup', noOverlap: true }));
      }
    },
    async stop() {
      // Every step runs even when one fails (a full disk): a failure is logged, the database always closed.
      const step = async (what: string, fn: () => unknown) => {
        try {
          await fn();
        } catch (err) {
          log.error(`at shutdown, could not ${what}`, { err });
        }
      };
      for (const p of polls.splice(0)) p.stop();
      for (const t of tasks.splice(0)) await step('stop a periodic job', () => t.destroy());
      await step('stop the wake-up schedule', () => room.stop());
      await step('stop the end of class sessions', () => sessions.stop());
      await step('wait for the polls under way', () => hosts.close(1500));
      await step('stop the template builds and imports', () => templates.close());
      await step("save the hosts' last-seen times", () => hosts.persistLastSeen());
      uncapture();
      await step('save the last events', () => events.close());
      store.close();
    },
  };
}

/** Timers, replaceable in tests. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(timer: unknown): void;
}

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout),
};

export interface Repeater {
  /** No round starts after this; one under way finishes on its own. */
  stop(): void;
}

/**
 * Runs `job` now and then every `intervalMs`, exactly: each round starts `intervalMs` after the
 * previous one started, or right after it ended when it took longer (never two at once). Unlike a
 * cron expression, any interval keeps its length (7 s stays 7 s, 90 s stays 90 s), which is what
 * "down after three missed polls" counts on. A failed round is logged; the next one comes on time.
 * @example const polls = repeatEvery(5000, () => hosts.pollMembers(), { name: 'poll', log }); ... polls.stop();
 */
export function repeatEvery(intervalMs: number, job: () => Promise<void>, opts: { name: string; log: Logger; clock?: Clock }): Repeater {
  const clock = opts.clock ?? realClock;
  let stopped = false;
  let timer: unknown;
  const round = (scheduledAt: number): void => {
    if (stopped) return;
    (async () => job())()
      .catch((err: unknown) => opts.log.error(`${opts.name} failed`, { err }))
      .finally(() => {
        if (stopped) return;
        // From the planned start, not the actual one: a timer that fires late does not shift the next.
        const nextAt = Math.max(scheduledAt + intervalMs, clock.now());
        timer = clock.setTimeout(() => round(nextAt), nextAt - clock.now());
      });
  };
  round(clock.now());
  return {
    stop() {
      stopped = true;
      clock.clearTimeout(timer);
    },
  };
}
