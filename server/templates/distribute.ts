// Putting templates on hosts: a host pulls a template it lacks from the controller's catalog and from
// peers that hold it (agent/pull.ts does the transfer). Three occasions: a VM placed on a host that
// lacks its template (VmService waits for the pull, the VM shows `pulling 43%`), a template marked
// "keep on every host" (pulled by every ready host that lacks it, new hosts included), and the admin's
// "copy to all hosts".
//
// Copy to all hosts builds chains, one per source that holds the template, so the room's links carry
// one copy each rather than N copies through one link:
//
//   holder H ─▶ T1 ─▶ T3 ─▶ T5      each Ti pulls from its predecessor while the predecessor is still
//   catalog  ─▶ T2 ─▶ T4 ─▶ T6      pulling (agents serve files still arriving), so a chain streams one
//                                   copy through the room in about the time of one transfer.
//
// Each puller's sources, in order: its predecessor, the one before (if the predecessor fails, the pull
// continues from there at the same offset), then every holder and the catalog. Peers read each other
// with a pull ticket (base/tickets.ts) the controller signs with the source's own key.
import { z } from 'zod';
import { InvalidField, NotFound, SkyError, toSkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import { makeTicket } from '../../base/tickets.ts';
import { TemplateName, type PullProgress, type PullSource, type TemplateInfo } from '../../wire/api.ts';
import { param, parseBody, type ApiRouter } from '../api/route.ts';
import type { Store } from '../db/store.ts';
import type { HostRecord, HostRegistry } from '../hosts/registry.ts';

/** How long a peer ticket is valid: long enough for a big template on a slow link, short enough to be worthless later. */
const TICKET_TTL_S = 6 * 3600;
/** How often the controller asks an agent how far its pull is. */
const FOLLOW_EVERY_MS = 500;
/** A "keep on every host" pull that failed on a host is tried again after this long. */
const KEEP_RETRY_MS = 10 * 60_000;
/** Sources before the catalog and the holders: a puller's predecessors in its chain. */
const UPSTREAM_SOURCES = 2;
const SETTING_KEEP = 'templates.keepOnEveryHost';

export interface DistributorOptions {
  registry: HostRegistry;
  store: Store;
  log: Logger;
  /** The templates the controller's catalog holds (hosts pull them at `<controller>/api/templates/NAME`). */
  catalog?: () => readonly TemplateInfo[];
  /** sha256 of the controller's certificate, pinned by hosts pulling from an https:// controller URL. */
  controllerFingerprint?: string;
}

/** One host's part in a copy: where it pulls from first. */
export interface CopyStep {
  host: string;
  /** The host or `controller` it pulls from first (its chain predecessor or the chain's source). */
  from: string;
}

/** `POST /api/templates/:name/copy-to-all`'s answer: who pulls, in which chains. */
export const CopyPlan = z.object({
  template: z.string(),
  /** Hosts that already have it (or are pulling it) and are left alone. */
  skipped: z.array(z.string()),
  /** One list per chain, in pull order: each host pulls from the one before it (the first from `from`). */
  chains: z.array(z.array(z.object({ host: z.string(), from: z.string() }))),
});
export type CopyPlan = z.infer<typeof CopyPlan>;

export class TemplateDistributor {
  /** The controller's URL as hosts reach it, for a host whose status does not say (an agent enrolled by discovery says). */
  controllerUrl: string | undefined;
  private readonly opts: DistributorOptions;
  private readonly registry: HostRegistry;
  private readonly log: Logger;
  /** Pulls the controller follows, by `host\0template`: a second ask joins the first. */
  private readonly following = new Map<string, Promise<void>>();
  /** When a "keep" pull last failed on a host (`host\0template`). */
  private readonly keepFailedAt = new Map<string, number>();
  /** The "keep on every host" list, read from the settings once (every poll looks at it). */
  private keptList: string[] | undefined;

  constructor(opts: DistributorOptions) {
    this.opts = opts;
    this.registry = opts.registry;
    this.log = opts.log;
    // Every poll: a host that lacks a template kept on every host starts pulling it (a new host at its first poll).
    opts.registry.on('status', (host) => this.keepUp(host));
  }

  // ---- what can be pulled, and from where ----

  /** The manifest of `name`: the catalog's, else the first host's that reports it. */
  manifest(name: string): TemplateInfo | undefined {
    const fromCatalog = this.opts.catalog?.().find((t) => t.name === name);
    if (fromCatalog) return fromCatalog;
    for (const h of this.registry.records()) {
      const t = h.status?.templates.find((x) => x.name === name);
      if (t && serves(h)) return t;
    }
    return undefined;
  }

  /** The download size of `name` when some source (the catalog, a host that is up) holds it; undefined otherwise. */
  pullableBytes(name: string): number | undefined {
    const t = this.manifest(name);
    return t ? t.files.reduce((n, f) => n + f.bytes, 0) : undefined;
  }

  /** Hosts that hold `name` with the files of `manifest` and can serve it (up, approved). */
  holders(manifest: TemplateInfo): HostRecord[] {
    return this.registry.records().filter((h) => serves(h) && h.status!.templates.some((t) => t.name === manifest.name && sameFiles(t, manifest)));
  }

  /**
   * Where `target` pulls `manifest` from, in order: `upstream` hosts (a chain's predecessors, nearest
   * first), then the holders (starting at a place that depends on the target, so pullers spread
   * over them), then the catalog.
   */
  sources(manifest: TemplateInfo, target: HostRecord, upstream: readonly HostRecord[] = [], catalogFirst = false): { sources: PullSource[]; names: string[] } {
    const out: PullSource[] = [];
    const names: string[] = [];
    const catalog = this.catalogSource(manifest, target);
    if (catalog && catalogFirst) {
      out.push(catalog);
      names.push('controller');
    }
    const add = (h: HostRecord) => {
      if (h.id === target.id || names.includes(h.id)) return;
      out.push(this.peerSource(h, manifest.name, target));
      names.push(h.id);
    };
    for (const h of upstream) add(h);
    const holders = this.holders(manifest);
    const start = holders.length > 0 ? hashOf(target.id) % holders.length : 0;
    for (let i = 0; i < holders.length; i++) add(holders[(start + i) % holders.length]!);
    if (catalog && !catalogFirst) {
      out.push(catalog);
      names.push('controller');
    }
    return { sources: out.slice(0, 16), names: names.slice(0, 16) };
  }

  private peerSource(source: HostRecord, template: string, reader: HostRecord): PullSource {
    const exp = Math.floor(Date.now() / 1000) + TICKET_TTL_S;
    // The certificate the controller pinned at the source's enrollment (read loosely: older records have none).
    const fingerprint = (source as { agentFingerprint?: string }).agentFingerprint;
    return {
      url: `${source.agentUrl.replace(/\/+$/, '')}/templates/${template}`, authorization: makeTicket(source.agentKey, { t: template, h: reader.id, exp }),
      ...(fingerprint && source.agentUrl.startsWith('https:') ? { fingerprint } : {}),
    };
  }

  private catalogSource(manifest: TemplateInfo, reader: HostRecord): PullSource | undefined {
    const inCatalog = this.opts.catalog?.().find((t) => t.name === manifest.name);
    if (!inCatalog || !sameFiles(inCatalog, manifest)) return undefined;
    const base = reader.status?.controller?.url ?? this.controllerUrl;
    if (!base) return undefined;
    const fingerprint = base.startsWith('https:') ? this.opts.controllerFingerprint : undefined;
    return { url: `${base.replace(/\/+$/, '')}/api/templates/${manifest.name}`, authorization: `Bearer ${reader.agentKey}`, ...(fingerprint ? { fingerprint } : {}) };
  }

  // ---- pulling ----

  /**
   * Makes host `hostId` pull template `name` and resolves once it is installed there (at once if the
   * host has it). `onProgress` gets 0..100 as the host reports. A second call for the same host and
   * template joins the first.
   */
  pull(hostId: string, name: string, opts: { upstream?: readonly HostRecord[]; onProgress?: (percent: number) => void } = {}): Promise<void> {
    const key = `${hostId}\0${name}`;
    const running = this.following.get(key);
    if (running) {
      if (opts.onProgress) void this.watch(hostId, name, opts.onProgress, running);
      return running;
    }
    const p = this.start(hostId, name, opts.upstream ?? []).then((started) => this.follow(hostId, name, started, opts.onProgress));
    const tracked = p.finally(() => this.following.delete(key));
    this.following.set(key, tracked);
    return tracked;
  }

  /** Asks the host to start pulling; answers its first progress (the agent has registered the pull when this resolves). */
  private async start(hostId: string, name: string, upstream: readonly HostRecord[], catalogFirst = false): Promise<PullProgress> {
    const host = this.registry.require(hostId);
    const manifest = this.manifest(name);
    if (!manifest) throw new NotFound(`template "${name}" (neither the catalog nor any host that is up has it)`);
    const { sources, names } = this.sources(manifest, host, upstream, catalogFirst);
    if (sources.length === 0) throw new SkyError(503, 'no_source', `template "${name}" cannot be pulled to ${host.hostname}: no host that is up holds it, and the catalog does not`);
    this.log.info(`host ${host.hostname} pulls template ${name} from ${names.join(', ')}`, { hostId, template: name });
    return this.registry.client(hostId).pullTemplate({ manifest, sources });
  }

  /** Follows a pull on its host until it ends; throws the agent's error when it failed. */
  private async follow(hostId: string, name: string, first: PullProgress, onProgress?: (percent: number) => void): Promise<void> {
    const host = this.registry.require(hostId);
    const client = this.registry.client(hostId);
    let p = first;
    let unreachable = 0;
    for (;;) {
      onProgress?.(percentOf(p));
      if (p.state === 'done') break;
      if (p.state === 'failed') throw new SkyError(p.code === 'checksum_mismatch' || p.code === 'bad_image' ? 422 : 502, p.code ?? 'pull_failed', `host ${host.hostname} could not pull template ${name}: ${p.error ?? 'failed'}`);
      await sleep(FOLLOW_EVERY_MS);
      try {
        p = await client.pullProgress(name);
        unreachable = 0;
      } catch (err) {
        // A host that stops answering for a minute has lost the pull (or restarted without it).
        if (++unreachable >= 120) throw toSkyError(err);
        this.log.debug(`progress of the pull of ${name} on ${host.hostname} not read: ${(err as Error).message}`);
      }
    }
    const fresh = this.registry.record(hostId);
    if (fresh) await this.registry.pollOne(fresh); // the scheduler and the pages see the template at once
    this.log.info(`host ${host.hostname} has template ${name}`, { hostId, template: name });
  }

  /** Reports the progress of a pull another caller started, until it ends. */
  private async watch(hostId: string, name: string, onProgress: (percent: number) => void, running: Promise<void>): Promise<void> {
    let over = false;
    void running.finally(() => (over = true)).catch(() => undefined); // the starter handles the outcome
    while (!over) {
      const p = this.registry.record(hostId)?.status?.pulls?.find((x) => x.name === name);
      if (p) onProgress(percentOf(p));
      await sleep(FOLLOW_EVERY_MS);
    }
  }

  /** Pulls the controller follows now (for a VM, a copy or a kept template), including those whose host has not reported them yet. */
  underWay(): { host: string; template: string }[] {
    return [...this.following.keys()].map((k) => ({ host: k.split('\0')[0]!, template: k.split('\0')[1]! }));
  }

  // ---- copy to all hosts ----

  /**
   * Every ready host lacking `name` pulls it, in chains (see the top of this file). Answers the plan
   * at once; the pulls go on (the templates page shows each host's progress from its `/status`).
   */
  copyToAll(name: string): CopyPlan & { done: Promise<void> } {
    const manifest = this.manifest(name);
    if (!manifest) throw new NotFound(`template "${name}" (neither the catalog nor any host that is up has it)`);
    const holders = this.holders(manifest);
    const skipped: string[] = [];
    const targets: HostRecord[] = [];
    for (const h of this.registry.records()) {
      if (h.state !== 'ready' || !h.status) continue;
      const has = h.status.templates.some((t) => t.name === name);
      const pulling = this.following.has(`${h.id}\0${name}`);
      if (has || pulling) skipped.push(h.id);
      else targets.push(h);
    }
    const heads: string[] = holders.map((h) => h.id);
    if (this.opts.catalog?.().some((t) => t.name === name)) heads.push('controller');
    if (heads.length === 0) throw new SkyError(503, 'no_source', `template "${name}": no host that is up holds it, and the catalog does not`);
    const chainCount = Math.max(1, Math.min(heads.length, targets.length));
    const chains: HostRecord[][] = Array.from({ length: chainCount }, () => []);
    targets.forEach((h, i) => chains[i % chainCount]!.push(h));
    const byId = new Map(holders.map((h) => [h.id, h]));
    const plan = chains.filter((c) => c.length > 0).map((chain, ci) => chain.map((h, i) => ({ host: h.id, from: i === 0 ? heads[ci]! : chain[i - 1]!.id })));
    this.log.info(`copy of template ${name} to ${targets.length} host(s) in ${plan.length} chain(s)`, { template: name, chains: plan });
    // Every host is asked at once. Asked one after the other, each after the previous host's answer, the
    // 8th started 12 s after the 1st at load average 20. A host that its successor asks before its own
    // request came makes the successor wait for it (agent/pull.ts).
    const outcomes = chains.flatMap((chain, ci) => {
      const head = byId.get(heads[ci]!);
      return chain.map((h, i) => {
        // Predecessors nearest first; the chain's source host (when it is a host) right after them.
        const upstream = chain.slice(Math.max(0, i - UPSTREAM_SOURCES), i).reverse();
        if (head) upstream.push(head);
        const key = `${h.id}\0${name}`;
        // The head of the catalog's chain pulls from the controller first, the others from their predecessor.
        const followed = this.start(h.id, name, upstream, i === 0 && heads[ci] === 'controller')
          .then((first) => this.follow(h.id, name, first))
          .finally(() => this.following.delete(key));
        this.following.set(key, followed);
        return followed.catch((err: unknown) => {
          this.log.warn(`copy of template ${name} to ${h.hostname} failed: ${(err as Error).message}`, { hostId: h.id, template: name });
        });
      });
    });
    const done = Promise.all(outcomes).then(() => undefined);
    return { template: name, skipped, chains: plan, done };
  }

  // ---- keep on every host ----

  /** Templates marked "keep on every host". */
  kept(): string[] {
    if (this.keptList) return this.keptList;
    const row = this.opts.store.get('SELECT value FROM settings WHERE key = ?', SETTING_KEEP);
    try {
      const list = row ? JSON.parse(String(row.value)) : [];
      this.keptList = Array.isArray(list) ? list.filter((x): x is string => typeof x === 'string') : [];
    } catch {
      this.log.warn(`setting ${SETTING_KEEP} is not a JSON list: read as empty`);
      this.keptList = [];
    }
    return this.keptList;
  }

  /** Marks `name` "keep on every host" (every ready host lacking it starts pulling it) or unmarks it. */
  keep(name: string, on: boolean): { template: string; keep: boolean } {
    if (on && !this.manifest(name)) throw new NotFound(`template "${name}" (neither the catalog nor any host that is up has it)`);
    const list = new Set(this.kept());
    if (on) list.add(name);
    else list.delete(name);
    this.opts.store.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value', SETTING_KEEP, JSON.stringify([...list].sort()));
    this.keptList = [...list].sort();
    if (on) for (const h of this.registry.records()) this.keepUp(h);
    return { template: name, keep: on };
  }

  /** Starts the pulls `host` lacks of the templates kept on every host. */
  private keepUp(host: HostRecord): void {
    if (host.state !== 'ready' || !host.status) return;
    const kept = this.kept();
    if (kept.length === 0) return;
    for (const name of kept) {
      const key = `${host.id}\0${name}`;
      if (host.status.templates.some((t) => t.name === name) || this.following.has(key)) continue;
      if (Date.now() - (this.keepFailedAt.get(key) ?? 0) < KEEP_RETRY_MS) continue;
      if (!this.manifest(name)) continue;
      this.pull(host.id, name).then(
        () => this.keepFailedAt.delete(key),
        (err: unknown) => {
          this.keepFailedAt.set(key, Date.now());
          this.log.warn(`template ${name} (kept on every host) could not be pulled to ${host.hostname}: ${(err as Error).message}; tried again in ${KEEP_RETRY_MS / 60_000} min`, { hostId: host.id, template: name });
        },
      );
    }
  }
}

/** The admin's routes: copy to all hosts, keep on every host (docs/api.md#templates). */
export function distributeRoutes(api: ApiRouter, distribute: TemplateDistributor): void {
  api.route({
    method: 'post', path: '/api/templates/:name/copy-to-all', summary: 'Every ready host lacking the template pulls it, in chains of hosts that relay it to each other', auth: 'admin',
    responses: { 202: CopyPlan, 404: 'no host that is up and no catalog has it' },
  }, (req, res) => {
    const name = templateParam(param(req, 'name'));
    const { done, ...plan } = distribute.copyToAll(name);
    void done; // each host's outcome is logged; progress is in the hosts' /status
    res.status(202).json(plan);
  });
  api.route({
    method: 'put', path: '/api/templates/:name/keep', summary: 'Keep the template on every host (hosts that lack it, and hosts that join later, pull it) or stop', auth: 'admin',
    body: z.strictObject({ keep: z.boolean() }), responses: { 200: z.object({ template: z.string(), keep: z.boolean() }) },
  }, (req, res, { body }) => {
    res.json(distribute.keep(templateParam(param(req, 'name')), parseBody(z.strictObject({ keep: z.boolean() }), body).keep));
  });
  api.route({
    method: 'get', path: '/api/templates-kept', summary: 'The templates kept on every host', auth: 'user',
    responses: { 200: z.object({ templates: z.array(z.string()) }) },
  }, (_req, res) => {
    res.json({ templates: distribute.kept() });
  });
}

function templateParam(name: string): string {
  if (!TemplateName.safeParse(name).success) throw new InvalidField('name', 'not a template name');
  return name;
}

/** A host whose agent can serve files: approved and answering (draining hosts still serve). */
function serves(h: HostRecord): boolean {
  return (h.state === 'ready' || h.state === 'draining') && h.status !== null;
}

function sameFiles(a: TemplateInfo, b: TemplateInfo): boolean {
  const key = (t: TemplateInfo) => t.files.map((f) => `${f.file}:${f.bytes}:${f.sha256}`).sort().join('|');
  return key(a) === key(b);
}

function percentOf(p: PullProgress): number {
  if (p.state === 'done') return 100;
  return p.totalBytes > 0 ? Math.min(99, Math.floor((p.doneBytes * 100) / p.totalBytes)) : 0;
}

/** FNV-1a of a host id: spreads pullers over the holders. */
function hashOf(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

