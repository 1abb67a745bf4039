// The host registry: enrollment, approval and draining, and the poll of every agent's `/status`.
// Host records and each host's latest status live in memory (read on every page and API call) and
// every change of a record is written through to SQLite.
//
//   enroll ──▶ pending ──approve──▶ ready ◀──undrain── draining
//                  (join token) ─────▲  │ ───drain──────▲
//                                    │  ▼ 3 missed polls
//                                    ├─ down (VMs unknown; on return the agent's VM list wins)
//                                    │  ▼ "Put to sleep" (the agent powers the PC off)
//                                    └─ asleep (no alarm; Wake-on-LAN, and its first answer makes it ready)
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { z } from 'zod';
import { EnrollRequest, type EnrollResponse, type HostStatus } from '../../wire/api.ts';
import { Conflict, InvalidField, NotFound, SkyError, Unavailable, fromZod } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import type { Row, Store } from '../db/store.ts';
import { sameSecret } from '../../base/secrets.ts';
import { compareCodeUnits, compareNames } from '../../base/order.ts';
import { AgentClient } from './agent-client.ts';
import { hostNames } from './names.ts';
import { addressOfUrl, broadcastFor, MAC_RE, sendWake, WAKE_PORT, type WakeSender } from './wol.ts';

export const HostState = z.enum(['pending', 'ready', 'down', 'draining', 'asleep']);
export type HostState = z.infer<typeof HostState>;

/** The enrollment body: the agent's `EnrollRequest`, plus the host's MAC (for Wake-on-LAN) if it sends one. */
export const ControllerEnrollRequest = EnrollRequest.extend({
  agentUrl: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }),
  mac: z.string().regex(MAC_RE, 'must be a MAC address like aa:bb:cc:dd:ee:ff').optional(),
});

/** Hosts waiting for approval at most: enrollment without a token cannot fill the controller. */
export const MAX_PENDING_HOSTS = 500;

/** A host as the API returns it (never its agent key). */
export const Host = z.object({
  id: z.string(),
  hostname: z.string(),
  /** The agent's base URL, e.g. `http://10.0.0.12:8081`. */
  url: z.string(),
  state: HostState,
  version: z.string(),
  mac: z.string().optional(),
  enrolledAt: z.string(),
  lastSeen: z.string().optional(),
  /** Polls missed in a row (3 make the host `down`). */
  missedPolls: z.number().int(),
  hypervisor: z.enum(['kvm', 'tcg', 'none']).optional(),
  cpuModel: z.string().optional(),
  capacity: z.object({ threads: z.number(), memoryMiB: z.number(), diskGiB: z.number() }).optional(),
  usage: z.object({
    cpuPct: z.number(), load1: z.number(), memoryUsedMiB: z.number(), memoryFreeMiB: z.number(), vmMemoryMiB: z.number(),
    diskFreeGiB: z.number(), vmsRunning: z.number(), vmsTotal: z.number(), vcpus: z.number(),
  }).optional(),
  templates: z.array(z.string()),
  /** sha256 of the agent's certificate, pinned at enrollment (https:// agents). */
  certFingerprint: z.string().optional(),
  /** Why the host is refused or unreachable as enrolled (e.g. its certificate changed). */
  problem: z.string().optional(),
  /** A drained host's running VMs are shut down at this time (ISO 8601). */
  shutdownVmsAt: z.string().optional(),
});
export type Host = z.infer<typeof Host>;

/** A host as it is now and as a refused enrollment asked it to become, side by side (admins only). */
export const HostReplacement = z.object({
  /** The request's id, e.g. `r-5f2c9a1b0d3e`. */
  id: z.string(),
  hostId: z.string(),
  /** What the host's record holds now. */
  current: z.object({
    hostname: z.string(), url: z.string(), keyFingerprint: z.string(), certFingerprint: z.string().optional(), state: HostState, lastSeen: z.string().optional(),
  }),
  /** What the enrollment asked for (`certFingerprint`: the certificate an https:// agent would be pinned to). */
  requested: z.object({ hostname: z.string(), url: z.string(), keyFingerprint: z.string(), certFingerprint: z.string().optional(), version: z.string() }),
  /** The address the enrollment came from (none: in-process). */
  from: z.string().optional(),
  firstAsked: z.string(),
  lastAsked: z.string(),
  /** Enrollments that asked for exactly this (an agent asks again about every 30 s). */
  times: z.number().int(),
});
export type HostReplacement = z.infer<typeof HostReplacement>;

/** A replacement request as kept in memory: the new key stays here, never polled and never shown. */
interface ReplacementRecord {
  id: string;
  hostId: string;
  hostname: string;
  agentUrl: string;
  agentKey: string;
  certFingerprint?: string | undefined;
  version: string;
  mac?: string | undefined;
  from?: string | undefined;
  firstAsked: string;
  lastAsked: string;
  times: number;
}

/** Replacement requests kept at most, in all and per host; past either, new ones are refused (503). */
export const MAX_REPLACEMENT_REQUESTS = 100;
export const MAX_REPLACEMENTS_PER_HOST = 5;
/** A replacement request nobody asked again for a day is forgotten. */
const REPLACEMENT_TTL_MS = 86_400_000;

/** How a key is shown: `sha256:` and the first 16 hex digits of its hash (the key itself never leaves the controller). */
export function keyFingerprint(key: string): string {
  return `sha256:${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}

/** A host's record in memory: the stored fields plus its latest status. */
export interface HostRecord {
  id: string;
  hostname: string;
  agentUrl: string;
  agentKey: string;
  state: HostState;
  version: string;
  mac?: string | undefined;
  enrolledAt: string;
  lastSeen?: string | undefined;
  /** Drained before it went down: it comes back `draining`. */
  drained: boolean;
  missedPolls: number;
  status: HostStatus | null;
  /** sha256 of the agent's TLS certificate, pinned at enrollment (https:// agents): polls, actions and consoles talk to nothing else. */
  agentFingerprint?: string | undefined;
  /** Why the host cannot be reached as it enrolled, e.g. its certificate changed (shown with its state). */
  problem?: string | undefined;
  /** A drained host's running VMs are shut down at this time (ISO 8601; hosts.shutdown_vms_at). */
  shutdownVmsAt?: string | undefined;
  /** When it was put to sleep (ms, this controller's clock): answers while it powers off do not wake it. */
  sleptAt?: number | undefined;
  /** It missed a poll since it was put to sleep: the next answer is a PC that woke up. */
  offSinceSleep?: boolean | undefined;
}

/** Checks a join token for a host (server/tokens.ts `JoinTokens.redeem`). */
export type RedeemJoinToken = (token: string, hostId: string) =>
  { ok: true } | { ok: false; code: string; message: string };

export interface RegistryOptions {
  clusterId: string;
  redeemJoinToken: RedeemJoinToken;
  log: Logger;
  /** Per-poll timeout (default 3000 ms). */
  pollTimeoutMs?: number;
  /** Polls running at once (default 32: a round of 200 switched-off hosts, 3 s each, takes ~20 s). */
  pollConcurrency?: number;
  /** Sends Wake-on-LAN packets (default: wol.ts `sendWake`, real UDP broadcasts). */
  sendWake?: WakeSender;
}

export interface RegistryEvents {
  /** A poll answered: `startedAt` is when the poll was sent (ms since epoch). */
  status: [host: HostRecord, status: HostStatus, startedAt: number];
  /** The host missed its third poll in a row, or was put to sleep: what it runs is unknown. */
  down: [host: HostRecord];
  /**
   * The host answers again after it was down or asleep, or its agent restarted (a reboot quicker than
   * three polls): emitted just before that answer's `status`.
   */
  returned: [host: HostRecord, from: 'down' | 'asleep' | 'restart'];
  /** The host was removed from the registry. */
  removed: [hostId: string];
  /** The host enrolled or changed its record (hostname, URL, key, state). */
  enrolled: [host: HostRecord];
}

export const MISSED_POLLS_FOR_DOWN = 3;
/** Pending hosts asked at once: their round is apart from the members', so this only bounds the load. */
const PENDING_POLL_CONCURRENCY = 8;
/**
 * Enrollments that end pending or refused, per sending address and minute; past it, every
 * enrollment from that address is refused until the minute is over. A pending agent asks about 6
 * times a minute, and enrollments with a valid token are not counted.
 */
export const UNTRUSTED_ENROLLS_PER_MINUTE = 30;
/** A host that answered a poll this recently is up: another machine may not take its id. */
const LIVE_MS = 20_000;
/** A host put to sleep may answer while it powers off; past this (or once it missed a poll) an answer means it woke up. */
export const SLEEP_GRACE_MS = 120_000;

function rowToHost(r: Row): HostRecord {
  return {
    id: String(r.id),
    hostname: String(r.hostname),
    agentUrl: String(r.agent_url),
    agentKey: String(r.agent_key),
    agentFingerprint: r.agent_fingerprint ? String(r.agent_fingerprint) : undefined,
    state: r.state as HostState,
    version: String(r.version),
    mac: r.mac ? String(r.mac) : undefined,
    enrolledAt: String(r.enrolled_at),
    lastSeen: r.last_seen ? String(r.last_seen) : undefined,
    drained: Number(r.drained) === 1,
    missedPolls: 0,
    status: null,
    shutdownVmsAt: r.shutdown_vms_at ? String(r.shutdown_vms_at) : undefined,
  };
}

/**
 * Hosts: `list()` / `get()` read memory; `enroll`, `approve`, `drain`, `undrain`, `wake`, `remove`
 * change records; `pollMembers()` asks every approved host for its status and `pollPending()` every
 * pending one whether it is there (both run on a schedule by the controller; `pollAll()` runs both).
 */
export class HostRegistry extends EventEmitter<RegistryEvents> {
  private readonly store: Store;
  private readonly opts: RegistryOptions;
  private readonly log: Logger;
  private readonly hosts = new Map<string, HostRecord>();
  /**
   * The records sorted by hostname, kept until a record comes, goes, is replaced or renamed (enroll,
   * replacement, remove): at 1,000 hosts the sort was a millisecond or two of every create's
   * placement and of the dashboard's data, recomputed once a second (docs/performance.md).
   */
  private order: HostRecord[] | undefined;
  private readonly rounds: { members?: Promise<void> | undefined; pending?: Promise<void> | undefined } = {};
  private readonly untrusted = new EnrollLimit();
  /** Refused enrollments with a host's id and a new key, kept for the admin's explicit "replace" (by request id). */
  private readonly replacementRequests = new Map<string, ReplacementRecord>();
  private closed = false;

  constructor(store: Store, opts: RegistryOptions) {
    super();
    this.store = store;
    this.opts = opts;
    this.log = opts.log;
    for (const r of store.all('SELECT * FROM hosts ORDER BY id')) {
      const h = rowToHost(r);
      this.hosts.set(h.id, h);
    }
  }

  /** Every host record (in memory), sorted by hostname. */
  records(): HostRecord[] {
    this.order ??= [...this.hosts.values()].sort((a, b) => compareNames(a.hostname, b.hostname) || compareCodeUnits(a.id, b.id));
    return [...this.order];
  }

  record(id: string): HostRecord | undefined {
    return this.hosts.get(id);
  }

  /** A host record, or a 404. */
  require(id: string): HostRecord {
    const h = this.hosts.get(id);
    if (!h) throw new NotFound(`host "${id}"`);
    return h;
  }

  list(): Host[] {
    return this.records().map(toApiHost);
  }

  get(id: string): Host {
    return toApiHost(this.require(id));
  }

  /** A client for the host's agent. */
  client(id: string): AgentClient {
    return new AgentClient(this.require(id));
  }

  /**
   * An agent enrolls (`POST /api/enroll`). The host is its `hostId`: enrolling again updates the
   * record and never duplicates it. A new host with a valid join token is `ready`, without one it
   * waits `pending`. An enrolled host (pending or not) is changed only by its own agent key (a new
   * DHCP address, a new version) or by a valid join token (a reinstalled PC with a new key): anyone
   * else who sends its id is refused and the record stays as it was. `from` is the sender's address:
   * named in the log, and limited to UNTRUSTED_ENROLLS_PER_MINUTE pending or refused enrollments
   * (429 past it). In-process enrollment (`skyhost up`'s own agent) gives none.
   */
  enroll(input: unknown, from?: string): EnrollResponse {
    if (from === undefined) return this.admit(input, undefined);
    const now = Date.now();
    const wait = this.untrusted.waitMs(from, now);
    if (wait > 0) {
      if (this.untrusted.firstRefusal(from)) {
        this.log.warn(`enrollments from ${from} refused for ${Math.ceil(wait / 1000)} s: more than ${UNTRUSTED_ENROLLS_PER_MINUTE} a minute without a join token`);
      }
      throw new SkyError(429, 'too_many_enrollments', `more than ${UNTRUSTED_ENROLLS_PER_MINUTE} enrollments a minute without a valid join token ` +
        `from ${from}: try again in ${Math.ceil(wait / 1000)} s`);
    }
    try {
      const answer = this.admit(input, from);
      if (answer.state === 'pending') this.untrusted.count(from, now);
      return answer;
    } catch (err) {
      if (err instanceof SkyError && err.status >= 400 && err.status < 500) this.untrusted.count(from, now);
      throw err;
    }
  }

  private admit(input: unknown, from: string | undefined): EnrollResponse {
    const parsed = ControllerEnrollRequest.safeParse(input ?? {});
    if (!parsed.success) throw fromZod(parsed.error);
    const req = parsed.data;
    const existing = this.hosts.get(req.hostId);
    const sender = from ? ` from ${from}` : '';
    if (req.agentUrl.startsWith('https:') && !req.certFingerprint) {
      // Checked before the token: a single-use token is not used up by a request refused anyway.
      throw new InvalidField('certFingerprint', 'an https:// agentUrl needs the sha256 fingerprint of the agent\'s certificate');
    }
    if (req.joinToken !== undefined) {
      const verdict = this.opts.redeemJoinToken(req.joinToken, req.hostId);
      if (!verdict.ok) {
        this.log.warn(`enrollment as host ${req.hostId}${sender} refused: ${verdict.message}`, { hostId: existing ? req.hostId : undefined });
        throw new SkyError(403, `join_token_${verdict.code}`, verdict.message, { fields: [{ field: 'joinToken', message: verdict.message }] });
      }
    }
    const trusted = req.joinToken !== undefined;
    const sameKey = existing !== undefined && sameSecret(existing.agentKey, req.agentKey);
    if (existing?.agentFingerprint && sameKey && !trusted && req.certFingerprint !== existing.agentFingerprint) {
      // Its key, another certificate: the key may have been copied off the PC; only a token (or a new enrollment after a removal) re-pins.
      existing.problem = `refused a new certificate (sha256 ${req.certFingerprint ?? 'none: plain HTTP'}) at ${req.agentUrl}${sender}: ` +
        'enroll with a join token to accept it';
      this.log.warn(`refused enrollment of ${existing.hostname} (${req.hostId})${sender}: its certificate changed; the host's record is unchanged`,
        { hostId: req.hostId, url: req.agentUrl, pinned: existing.agentFingerprint, got: req.certFingerprint });
      throw new SkyError(409, 'host_certificate_changed', `host ${req.hostId} enrolled with another certificate (sha256 ${existing.agentFingerprint}): ` +
        'enroll with a join token to replace it', { fields: [{ field: 'certFingerprint', message: 'not the certificate this host enrolled with' }] });
    }
    if (existing && !sameKey && !trusted) {
      // Not its key and no token: a stranger (or a reinstall that lost its key) must not touch the record.
      // It is kept as a replacement request, which only an admin's explicit approval applies.
      const kept = this.keepReplacementRequest(req, from);
      this.log.warn(`refused enrollment as ${existing.hostname} (${req.hostId})${sender}: another agent key and no join token; ` +
        `the host's record is unchanged${kept.times === 1 ? ` (kept as replacement request ${kept.id} for an admin)` : ''}`, { hostId: req.hostId, url: req.agentUrl });
      throw new SkyError(409, 'host_already_enrolled', `host ${req.hostId} is already enrolled with another agent key: ` +
        'enroll with a join token to replace it (a reinstalled PC), or ask an admin to approve the replacement on the hosts page',
      { fields: [{ field: 'agentKey', message: 'not the key this host enrolled with' }], replacementRequest: kept.id });
    }
    if (existing && !sameKey && existing.agentUrl !== req.agentUrl && existing.missedPolls === 0 &&
      existing.lastSeen && Date.now() - Date.parse(existing.lastSeen) < LIVE_MS) {
      // Another machine answers as this host right now: most likely a disk image cloned with its /etc/machine-id.
      this.log.warn(`refused enrollment as ${existing.hostname} (${req.hostId})${sender}: that host is up at ${existing.agentUrl}`,
        { hostId: req.hostId, url: req.agentUrl });
      throw new SkyError(409, 'host_id_in_use', `host id ${req.hostId} belongs to ${existing.hostname} (${existing.agentUrl}), which is up: ` +
        'give this machine its own id (systemd-machine-id-setup after clearing /etc/machine-id, or skyhost agent --host-id)',
      { fields: [{ field: 'hostId', message: 'in use by another machine' }] });
    }
    const now = new Date().toISOString();
    let state: HostState;
    if (!existing) {
      state = trusted ? 'ready' : 'pending';
      if (!trusted && [...this.hosts.values()].filter((h) => h.state === 'pending').length >= MAX_PENDING_HOSTS) {
        throw new Unavailable(`${MAX_PENDING_HOSTS} hosts already wait for approval: approve or remove some, or enroll with a join token`);
      }
    } else if (existing.state === 'pending') {
      state = trusted ? 'ready' : 'pending';
    } else {
      state = existing.drained || existing.state === 'draining' ? 'draining' : 'ready';
    }
    const record: HostRecord = {
      id: req.hostId,
      hostname: req.hostname,
      agentUrl: req.agentUrl,
      agentKey: req.agentKey,
      state,
      version: req.version,
      mac: req.mac ?? existing?.mac,
      enrolledAt: existing?.enrolledAt ?? now,
      lastSeen: existing?.lastSeen,
      drained: state === 'draining',
      missedPolls: 0,
      status: sameKey ? existing.status : null,
      agentFingerprint: req.certFingerprint,
      shutdownVmsAt: existing?.shutdownVmsAt,
    };
    const answer: EnrollResponse = {
      hostId: record.id,
      state,
      clusterId: this.opts.clusterId,
      message: state === 'pending' ? 'waiting for an admin to approve this host' : `joined cluster ${this.opts.clusterId}`,
    };
    if (existing && sameKey && existing.hostname === record.hostname && existing.agentUrl === record.agentUrl &&
      existing.state === record.state && existing.version === record.version && existing.mac === record.mac &&
      existing.agentFingerprint === record.agentFingerprint) {
      // A pending agent asks again every few seconds: nothing to write, nothing worth an event.
      this.log.debug(`host ${record.hostname} enrolled again, unchanged (${state})`, { hostId: record.id });
      return answer;
    }
    this.store.run(`INSERT INTO hosts (id, hostname, agent_url, agent_key, state, version, mac, enrolled_at, drained, agent_fingerprint)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT(id) DO UPDATE SET hostname = excluded.hostname, agent_url = excluded.agent_url, agent_key = excluded.agent_key,
        state = excluded.state, version = excluded.version, mac = excluded.mac, drained = excluded.drained, agent_fingerprint = excluded.agent_fingerprint,
        asleep = 0`,
      record.id, record.hostname, record.agentUrl, record.agentKey, record.state, record.version, record.mac ?? null, record.enrolledAt,
      record.drained ? 1 : 0, record.agentFingerprint ?? null);
    this.hosts.set(record.id, record);
    this.order = undefined;
    if (!sameKey) this.dropReplacementRequests(record.id); // replaced with a token (or new): older requests are moot
    this.emit('enrolled', record);
    const how = !existing ? 'enrolled' : sameKey ? 'enrolled again' : 'replaced with a join token (new agent key)';
    this.log.info(`host ${this.named(record)} ${how} (${state})${sender}`, { hostId: record.id, url: record.agentUrl });
    return answer;
  }

  /** pending -> ready; its status is asked for at once (a pending host is polled without its key). */
  approve(id: string): Host {
    const h = this.require(id);
    if (h.state !== 'pending') throw new Conflict(`host ${this.named(h)} is ${h.state}, not pending`);
    this.setState(h, h.missedPolls >= MISSED_POLLS_FOR_DOWN ? 'down' : 'ready', false);
    this.log.info(`host ${this.named(h)} approved`, { hostId: id });
    if (!this.closed) {
      this.pollOne(h).catch((err: Error) => this.log.error(`first poll of ${this.named(h)} after its approval failed`, { hostId: id, err }));
    }
    return toApiHost(h);
  }

  /**
   * Takes no new VMs; running VMs stay, or are shut down at `shutdownVmsAt` (ISO 8601; null: never) by the
   * controller's job (server/hosts/wake.ts). Draining a draining host again changes only that time.
   */
  drain(id: string, shutdownVmsAt?: string | null): Host {
    const h = this.require(id);
    if (h.state === 'pending') throw new Conflict(`host ${this.named(h)} is pending: approve it first`);
    this.setState(h, h.state === 'down' || h.state === 'asleep' ? h.state : 'draining', true);
    if (shutdownVmsAt !== undefined) this.setShutdownVmsAt(h, shutdownVmsAt ?? undefined);
    this.log.info(`host ${this.named(h)} draining${h.shutdownVmsAt ? `; its VMs are shut down at ${h.shutdownVmsAt}` : ''}`, { hostId: id });
    return toApiHost(h);
  }

  undrain(id: string): Host {
    const h = this.require(id);
    if (h.state !== 'draining' && !((h.state === 'down' || h.state === 'asleep') && h.drained)) throw new Conflict(`host ${this.named(h)} is ${h.state}, not draining`);
    this.setState(h, h.state === 'down' || h.state === 'asleep' ? h.state : 'ready', false);
    this.setShutdownVmsAt(h, undefined);
    this.log.info(`host ${this.named(h)} back in service`, { hostId: id });
    return toApiHost(h);
  }

  /** Sets (or clears) when a drained host's VMs are shut down. */
  setShutdownVmsAt(h: HostRecord, at: string | undefined): void {
    if (at !== undefined && Number.isNaN(Date.parse(at))) throw new InvalidField('shutdownVmsAt', 'must be a date and time like 2026-05-04T16:00:00Z');
    h.shutdownVmsAt = at === undefined ? undefined : new Date(at).toISOString();
    this.store.run('UPDATE hosts SET shutdown_vms_at = ? WHERE id = ?', h.shutdownVmsAt ?? null, h.id);
  }

  /**
   * Sends a Wake-on-LAN packet to the host's MAC (or `mac`, which is then remembered), to the broadcast
   * address of the subnet its agent was last seen on (wol.ts `broadcastFor`), port 9.
   */
  async wake(id: string, mac?: string): Promise<{ host: Host; sent: boolean; mac: string; address: string; port: number }> {
    const h = this.require(id);
    const target = mac ?? h.mac;
    if (!target) {
      throw new InvalidField('mac', `the MAC address of ${this.named(h)} is not known (its agent reports it once it runs this version): ` +
        'give it as { "mac": "aa:bb:cc:dd:ee:ff" }');
    }
    if (!MAC_RE.test(target)) throw new InvalidField('mac', 'must be a MAC address like aa:bb:cc:dd:ee:ff');
    if (mac && mac !== h.mac) {
      h.mac = mac.toLowerCase();
      this.store.run('UPDATE hosts SET mac = ? WHERE id = ?', h.mac, id);
    }
    const address = broadcastFor(addressOfUrl(h.agentUrl) ?? '');
    try {
      await (this.opts.sendWake ?? sendWake)(target, address, WAKE_PORT);
    } catch (err) {
      throw new Unavailable(`the Wake-on-LAN packet could not be sent to ${address}: ${(err as Error).message}`);
    }
    this.log.info(`Wake-on-LAN sent to ${this.named(h)} (${target}, broadcast ${address} port ${WAKE_PORT})`, { hostId: id });
    return { host: toApiHost(h), sent: true, mac: target, address, port: WAKE_PORT };
  }

  /**
   * "Put to sleep": the host is `asleep` at once (it takes no new VMs, and not answering is no alarm),
   * and its agent switches the PC off. A host that does not answer (already off) is just marked asleep.
   */
  async sleep(id: string, by: string): Promise<{ host: Host; poweredOff: boolean; message: string }> {
    const h = this.require(id);
    if (h.state === 'pending') throw new Conflict(`host ${this.named(h)} is pending: approve it first`);
    if (h.state === 'asleep') return { host: toApiHost(h), poweredOff: false, message: `${this.named(h)} is already asleep` };
    const wasUp = h.state === 'ready' || h.state === 'draining';
    h.sleptAt = Date.now();
    h.offSinceSleep = false;
    this.setState(h, 'asleep', h.drained || h.state === 'draining');
    if (wasUp) this.emit('down', h);
    let poweredOff = false;
    let message: string;
    try {
      await this.client(id).sleep();
      poweredOff = true;
      message = `${this.named(h)} is switching off`;
    } catch (err) {
      // Off already, or it cannot switch itself off: it is asleep either way, and Wake brings it back.
      h.offSinceSleep = true;
      message = `${this.named(h)} is marked asleep; its agent did not switch it off: ${(err as Error).message}`;
    }
    this.log.info(`host ${this.named(h)} put to sleep by ${by}: ${message}`, { hostId: id });
    return { host: toApiHost(h), poweredOff, message };
  }

  /** Forgets a host (its VMs' records are the VM service's business: see `removed`). */
  remove(id: string): void {
    const h = this.require(id);
    const label = this.named(h); // gone from the labels once removed
    this.store.run('DELETE FROM hosts WHERE id = ?', id);
    this.hosts.delete(id);
    this.order = undefined;
    this.dropReplacementRequests(id);
    this.log.info(`host ${label} removed`, { hostId: id });
    this.emit('removed', id);
  }

  // ---- replacement requests: a known host id with a new key and no token, for the admin to decide ----

  /** The waiting replacement requests, each beside the host as it is now, oldest first. */
  replacements(): HostReplacement[] {
    this.pruneReplacementRequests(Date.now());
    const out: HostReplacement[] = [];
    for (const r of this.replacementRequests.values()) {
      const h = this.hosts.get(r.hostId);
      if (h) out.push(toApiReplacement(r, h));
    }
    return out.sort((a, b) => compareCodeUnits(a.firstAsked, b.firstAsked) || compareCodeUnits(a.id, b.id));
  }

  /**
   * The admin's explicit "replace": the host takes the request's key, URL, certificate (pinned), hostname
   * and version; its state and VMs stay, and it is polled with the new key at once. Other requests for the host go.
   */
  approveReplacement(requestId: string, by: string): Host {
    const r = this.requireReplacement(requestId);
    const h = this.require(r.hostId);
    const before = { url: h.agentUrl, key: keyFingerprint(h.agentKey) };
    this.store.run('UPDATE hosts SET hostname = ?, agent_url = ?, agent_key = ?, version = ?, mac = ?, agent_fingerprint = ? WHERE id = ?',
      r.hostname, r.agentUrl, r.agentKey, r.version, r.mac ?? h.mac ?? null, r.certFingerprint ?? null, h.id);
    Object.assign(h, {
      hostname: r.hostname, agentUrl: r.agentUrl, agentKey: r.agentKey, version: r.version, mac: r.mac ?? h.mac, agentFingerprint: r.certFingerprint,
      problem: undefined, status: null, missedPolls: 0,
    });
    this.order = undefined; // the hostname may have changed
    this.dropReplacementRequests(h.id);
    this.emit('enrolled', h);
    this.log.info(`host ${h.hostname} (${h.id}) replaced by ${by}: agent key ${before.key} -> ${keyFingerprint(r.agentKey)}, ` +
      `URL ${before.url} -> ${r.agentUrl} (replacement request ${r.id}${r.from ? ` from ${r.from}` : ''})`, { hostId: h.id, url: r.agentUrl });
    if (!this.closed && h.state !== 'pending') {
      this.pollOne(h).catch((err: Error) => this.log.error(`first poll of ${this.named(h)} after its replacement failed`, { hostId: h.id, err }));
    }
    return toApiHost(h);
  }

  /** Forgets a replacement request; the host stays as it is. */
  rejectReplacement(requestId: string, by: string): void {
    const r = this.requireReplacement(requestId);
    this.replacementRequests.delete(r.id);
    const host = this.hosts.get(r.hostId);
    this.log.info(`replacement request ${r.id} for host ${host ? this.named(host) : r.hostId} (${r.agentUrl}${r.from ? ` from ${r.from}` : ''}, key ${keyFingerprint(r.agentKey)}) ` +
      `rejected by ${by}`, { hostId: r.hostId });
  }

  private requireReplacement(requestId: string): ReplacementRecord {
    this.pruneReplacementRequests(Date.now());
    const r = this.replacementRequests.get(requestId);
    if (!r || !this.hosts.has(r.hostId)) throw new NotFound(`replacement request "${requestId}"`);
    return r;
  }

  /** Records (or refreshes) a refused enrollment's request; bounded in all and per host. */
  private keepReplacementRequest(req: z.infer<typeof ControllerEnrollRequest>, from: string | undefined): ReplacementRecord {
    const now = new Date();
    this.pruneReplacementRequests(now.getTime());
    const same = [...this.replacementRequests.values()].find((r) => r.hostId === req.hostId && sameSecret(r.agentKey, req.agentKey));
    if (same) {
      // The same agent asking again: its latest address and names win, the count goes on.
      Object.assign(same, {
        hostname: req.hostname, agentUrl: req.agentUrl, certFingerprint: req.certFingerprint, version: req.version, mac: req.mac, from, lastAsked: now.toISOString(),
      });
      same.times++;
      return same;
    }
    const forHost = [...this.replacementRequests.values()].filter((r) => r.hostId === req.hostId).length;
    if (forHost >= MAX_REPLACEMENTS_PER_HOST || this.replacementRequests.size >= MAX_REPLACEMENT_REQUESTS) {
      throw new Unavailable(forHost >= MAX_REPLACEMENTS_PER_HOST
        ? `${MAX_REPLACEMENTS_PER_HOST} replacement requests already wait for host ${req.hostId}: an admin must approve or reject them, or enroll with a join token`
        : `${MAX_REPLACEMENT_REQUESTS} replacement requests already wait: an admin must approve or reject some, or enroll with a join token`);
    }
    const r: ReplacementRecord = {
      id: `r-${randomBytes(6).toString('hex')}`, hostId: req.hostId, hostname: req.hostname, agentUrl: req.agentUrl, agentKey: req.agentKey,
      certFingerprint: req.certFingerprint, version: req.version, mac: req.mac, from, firstAsked: now.toISOString(), lastAsked: now.toISOString(), times: 1,
    };
    this.replacementRequests.set(r.id, r);
    return r;
  }

  private dropReplacementRequests(hostId: string): void {
    for (const [id, r] of this.replacementRequests) if (r.hostId === hostId) this.replacementRequests.delete(id);
  }

  private pruneReplacementRequests(now: number): void {
    for (const [id, r] of this.replacementRequests) {
      if (now - Date.parse(r.lastAsked) > REPLACEMENT_TTL_MS || !this.hosts.has(r.hostId)) this.replacementRequests.delete(id);
    }
  }

  /** Finds the host an agent key belongs to (agents authenticate with it when they send events). */
  byAgentKey(key: string): HostRecord | undefined {
    for (const h of this.hosts.values()) if (sameSecret(h.agentKey, key)) return h;
    return undefined;
  }

  /** Polls every host once: members and pending hosts, each in its own round. */
  async pollAll(): Promise<void> {
    await Promise.all([this.pollMembers(), this.pollPending()]);
  }

  /**
   * Polls every approved host (ready, draining, down), `pollConcurrency` at a time; concurrent calls
   * share one round. With `spreadMs`, the polls start evenly over that time instead of all at once.
   */
  pollMembers(opts: { spreadMs?: number } = {}): Promise<void> {
    return this.round('members', (h) => h.state !== 'pending', this.opts.pollConcurrency ?? 32, opts.spreadMs ?? 0);
  }

  /**
   * How long the scheduled rounds spread their polls over, for rounds `intervalMs` apart: as long as
   * the last poll can still time out before the next round is due, at most half the interval.
   * A round that let 1,000 polls start at once kept the controller busy with their answers for most
   * of a second, and every page asked for meanwhile waited (the 1,000-host dashboard p99).
   */
  pollSpreadMs(intervalMs: number): number {
    return Math.max(0, Math.min(intervalMs / 2, intervalMs - (this.opts.pollTimeoutMs ?? 3000) - 500));
  }

  /**
   * Asks every pending host whether it is there, a few at a time, in a round of its own: however
   * many strangers enroll (at addresses that may never answer), approved hosts are polled on time.
   */
  pollPending(): Promise<void> {
    return this.round('pending', (h) => h.state === 'pending', PENDING_POLL_CONCURRENCY);
  }

  private round(kind: 'members' | 'pending', which: (h: HostRecord) => boolean, concurrency: number, spreadMs = 0): Promise<void> {
    if (this.closed) return Promise.resolve();
    const running = this.rounds[kind];
    if (running) return running;
    const queue = [...this.hosts.values()].filter(which);
    const startedAt = Date.now();
    // a room's 30 PCs are still polled at once (60 ms); a district's 1,000 over `spreadMs`
    const gapMs = queue.length > 1 ? Math.min(spreadMs / queue.length, MAX_POLL_GAP_MS) : 0;
    let next = 0;
    const workers = Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
      while (next < queue.length && !this.closed) {
        const i = next++;
        const wait = startedAt + i * gapMs - Date.now();
        if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
        await this.pollOne(queue[i]!);
      }
    });
    const done = Promise.all(workers).then(() => undefined).finally(() => {
      this.rounds[kind] = undefined;
    });
    this.rounds[kind] = done;
    return done;
  }

  /**
   * Polls one host and applies the result (missed poll, down, back). A pending host is asked only
   * `/healthz`, without its key: nothing secret goes to an address nobody has approved yet, and
   * nothing it reports (VMs, capacity) counts before the approval.
   */
  async pollOne(h: HostRecord): Promise<void> {
    const startedAt = Date.now();
    const timeoutMs = this.opts.pollTimeoutMs ?? 3000;
    let status: HostStatus | undefined;
    try {
      let answeredAs: string;
      if (h.state === 'pending') answeredAs = (await AgentClient.health(h.agentUrl, { timeoutMs, pin: h.agentFingerprint })).hostId;
      else {
        status = await new AgentClient(h).status({ timeoutMs });
        answeredAs = status.hostId;
      }
      if (answeredAs !== h.id) throw new Error(`answered as host ${answeredAs}`);
    } catch (err) {
      if (this.closed || this.hosts.get(h.id) !== h) return;
      h.missedPolls++;
      if ((err as SkyError).code === 'untrusted_peer' && h.problem !== (err as Error).message) {
        h.problem = (err as Error).message;
        this.log.warn(`host ${this.named(h)} refused: ${h.problem} (a join token re-pins a reinstalled host)`, { hostId: h.id });
      }
      this.log.debug(`poll of ${h.hostname} failed`, { hostId: h.id, err: (err as Error).message });
      if (h.state === 'asleep') h.offSinceSleep = true; // switched off on purpose: no alarm
      if (h.missedPolls === MISSED_POLLS_FOR_DOWN && (h.state === 'ready' || h.state === 'draining')) {
        this.setState(h, 'down', h.state === 'draining');
        this.log.warn(`host ${this.named(h)} is down: ${MISSED_POLLS_FOR_DOWN} polls missed (${(err as Error).message})`, { hostId: h.id });
        this.emit('down', h);
      }
      return;
    }
    if (this.closed || this.hosts.get(h.id) !== h) return;
    h.missedPolls = 0;
    h.problem = undefined;
    h.lastSeen = new Date().toISOString();
    if (!status || h.state === 'pending') return; // approved while the health check was under way: the next poll reads its status
    if (h.state === 'asleep' && !h.offSinceSleep && h.sleptAt !== undefined && Date.now() - h.sleptAt < SLEEP_GRACE_MS) {
      return; // still powering off: its VMs stay unknown until it wakes
    }
    const previous = h.status;
    h.status = status;
    if (status.mac && status.mac.toLowerCase() !== h.mac) {
      this.log.info(`host ${this.named(h)} reports MAC address ${status.mac.toLowerCase()}${h.mac ? ` (was ${h.mac})` : ''}`, { hostId: h.id });
      h.mac = status.mac.toLowerCase();
      this.store.run('UPDATE hosts SET mac = ? WHERE id = ?', h.mac, h.id);
    }
    let returned: 'down' | 'asleep' | 'restart' | undefined;
    if (h.state === 'down' || h.state === 'asleep') {
      returned = h.state;
      this.setState(h, h.drained ? 'draining' : 'ready', h.drained);
      h.sleptAt = undefined;
      this.log.info(returned === 'asleep' ? `host ${this.named(h)} woke up` : `host ${this.named(h)} is back`, { hostId: h.id });
    } else if (previous && status.uptimeS < previous.uptimeS) {
      returned = 'restart'; // its agent started again between two polls (a quick reboot): what it ran may have stopped
    }
    if (returned) this.emit('returned', h, returned);
    this.emit('status', h, status, startedAt);
  }

  /** What the pages call the host (its label: another host may share its hostname, server/hosts/names.ts). */
  private named(h: HostRecord): string {
    return hostNames({ store: this.store, hosts: this }).label(h.id);
  }

  private setState(h: HostRecord, state: HostState, drained: boolean): void {
    h.state = state;
    h.drained = drained;
    this.store.run('UPDATE hosts SET state = ?, drained = ?, asleep = ?, last_seen = ? WHERE id = ?',
      state, drained ? 1 : 0, state === 'asleep' ? 1 : 0, h.lastSeen ?? null, h.id);
  }

  /** Stops polling: waits for a round in flight (at most `timeoutMs`) and ignores what comes later. */
  async close(timeoutMs = 5000): Promise<void> {
    const rounds = [this.rounds.members, this.rounds.pending].filter((r) => r !== undefined);
    this.closed = true;
    if (rounds.length) await Promise.race([Promise.all(rounds), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }

  /** Writes every host's last-seen time (on a slow schedule and at shutdown). */
  persistLastSeen(): void {
    this.store.tx(() => {
      for (const h of this.hosts.values()) if (h.lastSeen) this.store.run('UPDATE hosts SET last_seen = ? WHERE id = ?', h.lastSeen, h.id);
    });
  }
}

/** The most time between two poll starts of a spread round (ms). */
const MAX_POLL_GAP_MS = 2;

/** Counts, per address, enrollments in the current minute. Bounded: the oldest addresses go first. */
class EnrollLimit {
  private readonly windows = new Map<string, { since: number; count: number; refused: boolean }>();

  /** How long `from` must wait before its next untrusted enrollment (0: it may go on). */
  waitMs(from: string, now: number): number {
    const w = this.windows.get(from);
    if (!w || now - w.since >= 60_000) return 0;
    return w.count >= UNTRUSTED_ENROLLS_PER_MINUTE ? w.since + 60_000 - now : 0;
  }

  /** True the first time `from` is refused in its window (say it once, not per request). */
  firstRefusal(from: string): boolean {
    const w = this.windows.get(from);
    if (!w || w.refused) return false;
    w.refused = true;
    return true;
  }

  count(from: string, now: number): void {
    let w = this.windows.get(from);
    if (!w || now - w.since >= 60_000) {
      this.windows.delete(from);
      w = { since: now, count: 0, refused: false };
      this.windows.set(from, w);
      if (this.windows.size > 10_000) this.windows.delete(this.windows.keys().next().value!);
    }
    w.count++;
  }
}

function toApiReplacement(r: ReplacementRecord, h: HostRecord): HostReplacement {
  return {
    id: r.id, hostId: r.hostId,
    current: {
      hostname: h.hostname, url: h.agentUrl, keyFingerprint: keyFingerprint(h.agentKey), ...(h.agentFingerprint ? { certFingerprint: h.agentFingerprint } : {}),
      state: h.state, ...(h.lastSeen ? { lastSeen: h.lastSeen } : {}),
    },
    requested: {
      hostname: r.hostname, url: r.agentUrl, keyFingerprint: keyFingerprint(r.agentKey), ...(r.certFingerprint ? { certFingerprint: r.certFingerprint } : {}), version: r.version,
    },
    ...(r.from ? { from: r.from } : {}), firstAsked: r.firstAsked, lastAsked: r.lastAsked, times: r.times,
  };
}

/** The API view of a host record. */
export function toApiHost(h: HostRecord): Host {
  const s = h.status;
  return {
    id: h.id,
    hostname: h.hostname,
    url: h.agentUrl,
    state: h.state,
    version: h.version,
    ...(h.mac ? { mac: h.mac } : {}),
    enrolledAt: h.enrolledAt,
    ...(h.lastSeen ? { lastSeen: h.lastSeen } : {}),
    missedPolls: h.missedPolls,
    ...(s ? {
      hypervisor: s.hypervisor,
      cpuModel: s.cpu.model,
      capacity: { threads: s.cpu.threads, memoryMiB: s.memory.totalMiB, diskGiB: s.disk.totalGiB },
      usage: {
        cpuPct: s.cpu.loadPct, load1: s.cpu.load1, memoryUsedMiB: s.memory.totalMiB - s.memory.freeMiB, memoryFreeMiB: s.memory.freeMiB,
        vmMemoryMiB: s.memory.usedByVmsMiB, diskFreeGiB: s.disk.freeGiB, vmsRunning: s.vms.running, vmsTotal: s.vms.total, vcpus: s.vms.vcpus,
      },
    } : {}),
    templates: s ? s.templates.map((t) => t.name) : [],
    ...(h.agentFingerprint ? { certFingerprint: h.agentFingerprint } : {}),
    ...(h.problem ? { problem: h.problem } : {}),
    ...(h.shutdownVmsAt ? { shutdownVmsAt: h.shutdownVmsAt } : {}),
  };
}
