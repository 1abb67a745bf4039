// Templates across the cluster: the controller's own catalog (catalog.ts, the source of truth hosts
// pull from) joined with what every host reports in `/status` (which hosts hold each template, which
// are pulling it). Imports and uploads go to the catalog, or to one host when a `host` is named; builds
// (builds.ts) and templates saved from a VM on a host go to the catalog.
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { TemplateImportRequest, type HostStatus, type TemplateInfo } from '../../wire/api.ts';
import { Conflict, NotFound, SkyError, Unavailable, toSkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import { compareNames } from '../../base/order.ts';
import type { AgentClient } from '../hosts/agent-client.ts';
import type { HostRegistry } from '../hosts/registry.ts';
import { TemplateBuilds } from './builds.ts';
import type { Catalog, ImportJob, TemplateMeta } from './catalog.ts';

/** A template as the controller lists it: the manifest plus which hosts have it. */
export const ClusterTemplate = z.object({
  name: z.string(),
  kind: z.enum(['disk', 'kernel', 'iso']),
  os: z.string(),
  description: z.string().optional(),
  minMemoryMiB: z.number().int(),
  console: z.enum(['serial', 'vnc']),
  needsKvm: z.boolean(),
  /** The image runs an SSH server (its manifest says `ssh: true`). */
  ssh: z.boolean().optional(),
  /** Total size of its files. */
  bytes: z.number().int(),
  /** sha256 of its disk image (an iso template: of its ISO) as its manifest records it. */
  sha256: z.string().optional(),
  /** Size of its disk as the guest sees it, in GiB (rounded up); 0 for a kernel-only template. */
  diskGiB: z.number().int(),
  /** Ids of the hosts that have it. */
  hosts: z.array(z.string()),
  /** Whether the controller's catalog holds it (hosts can pull it from the controller). */
  controller: z.boolean(),
  /** Hosts pulling it now, with how far along they are (from each host's `/status` `pulls`). */
  pulling: z.array(z.object({ host: z.string(), percent: z.number().int() })),
});
export type ClusterTemplate = z.infer<typeof ClusterTemplate>;

/**
 * `POST /api/templates` with JSON: the agent's `TemplateImportRequest` (the agent downloads the
 * file from `url` and checks its `sha256`, both required here), plus the host to import on.
 */
export const TemplateImport = TemplateImportRequest.extend({
  url: z.url({ protocol: /^https?$/ }),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits'),
  /** The host to import on (default: every ready host). */
  host: z.string().max(64).optional(),
});
export type TemplateImport = z.input<typeof TemplateImport>;

const GiB = 1024 ** 3;

/** What one host answered to a template operation. */
export interface HostResult {
  host: string;
  ok: boolean;
  error?: string;
}

function toClusterTemplate(t: TemplateInfo): ClusterTemplate {
  const bytes = t.files.reduce((n, f) => n + f.bytes, 0);
  const disk = t.files.find((f) => f.role === 'disk');
  const main = disk ?? t.files.find((f) => f.role === 'iso');
  return {
    name: t.name, kind: t.kind, os: t.os, ...(t.description ? { description: t.description } : {}),
    minMemoryMiB: t.minMemoryMiB, console: t.console, needsKvm: t.needsKvm, ...(t.ssh ? { ssh: true } : {}), bytes, ...(main ? { sha256: main.sha256 } : {}),
    diskGiB: disk ? Math.max(1, Math.ceil((disk.virtualBytes ?? disk.bytes) / GiB)) : 0, hosts: [], controller: false, pulling: [],
  };
}

/** One pull as an agent reports it in `/status` `pulls` (wire/pull.ts `PullProgress`); read leniently. */
const ReportedPull = z.object({ name: z.string(), state: z.string(), doneBytes: z.number(), totalBytes: z.number() });

/**
 * The one place pull progress is read from: a host's `/status` field `pulls`, a list of
 * `{ name, state: 'pulling'|'done'|'failed', doneBytes, totalBytes }`. Answers the pulls under way.
 */
export function pullsReported(status: HostStatus | null | undefined): { template: string; percent: number }[] {
  const raw = (status as { pulls?: unknown } | null | undefined)?.pulls;
  if (!Array.isArray(raw)) return [];
  const out: { template: string; percent: number }[] = [];
  for (const item of raw) {
    const p = ReportedPull.safeParse(item);
    if (!p.success || p.data.state !== 'pulling') continue;
    out.push({ template: p.data.name, percent: p.data.totalBytes > 0 ? Math.min(100, Math.floor((p.data.doneBytes * 100) / p.data.totalBytes)) : 0 });
  }
  return out;
}

export class Templates {
  private readonly registry: HostRegistry;
  readonly catalog: Catalog;
  private readonly log: Logger;
  /** Builds of templates into the catalog by the skyhost executable (builds.ts). */
  readonly builds: TemplateBuilds;
  /** Names of the VMs that use a template (set by the services once the VM service exists). */
  usedBy: (template: string) => string[] = () => [];

  constructor(registry: HostRegistry, log: Logger, catalog: Catalog) {
    this.registry = registry;
    this.catalog = catalog;
    this.log = log;
    this.builds = new TemplateBuilds({ catalog, log, exists: (name) => this.find(name) !== undefined });
  }

  /** Stops the builds and imports under way (at shutdown); each removes its staging folder. */
  async close(): Promise<void> {
    await Promise.all([this.builds.close(), this.catalog.close()]);
  }

  /** Every template of the catalog or of some host, by name, with the hosts that have it and those pulling it. */
  list(): ClusterTemplate[] {
    return this.collect();
  }

  /** The templates (only the one named `only`, when given) with the hosts that have or pull each. */
  private collect(only?: string): ClusterTemplate[] {
    const byName = new Map<string, ClusterTemplate>();
    for (const t of this.catalog.snapshot()) if (only === undefined || t.name === only) byName.set(t.name, { ...toClusterTemplate(t), controller: true });
    for (const h of this.registry.records()) {
      for (const t of h.status?.templates ?? []) {
        if (only !== undefined && t.name !== only) continue;
        let entry = byName.get(t.name);
        if (!entry) byName.set(t.name, entry = toClusterTemplate(t));
        entry.hosts.push(h.id);
      }
      for (const p of pullsReported(h.status)) byName.get(p.template)?.pulling.push({ host: h.id, percent: p.percent });
    }
    return [...byName.values()].sort((a, b) => compareNames(a.name, b.name));
  }

  /** Reads the catalog's folder again, then lists (what the CLI added there shows). */
  async refreshed(): Promise<ClusterTemplate[]> {
    await this.catalog.refresh();
    return this.list();
  }

  /** One template by name, or undefined. */
  find(name: string): ClusterTemplate | undefined {
    // every VM request asks: only this template's entry is put together (a district has 1,000 hosts' lists)
    return this.collect(name)[0];
  }

  /** Imports by URL into the catalog running or finished lately. */
  imports(): ImportJob[] {
    return this.catalog.imports();
  }

  /** Hosts that take an import: the one named, or every ready host. */
  private targets(host?: string): string[] {
    if (host) return [this.registry.require(host).id];
    const ready = this.registry.records().filter((h) => h.state === 'ready').map((h) => h.id);
    if (ready.length === 0) throw new Unavailable('no host is ready to take the template');
    return ready;
  }

  /** Asks one host's agent to download and check a template (the import names a `host`); answers its result. */
  async importOnHost(input: TemplateImport & { host: string }): Promise<{ results: HostResult[] }> {
    const req = TemplateImport.parse(input);
    const { host, ...body } = req;
    return this.onHosts(this.targets(host), `template ${req.name} imported`, (client) => client.importTemplate(body));
  }

  /** Starts an import by URL into the catalog; `done` settles with the template when it is in. */
  startImport(input: TemplateImport): { job: ImportJob; done: Promise<TemplateInfo> } {
    const { host: _host, url, sha256, ...meta } = TemplateImport.parse(input);
    return this.catalog.startImport({ ...meta, url, sha256 });
  }

  /** Streams an upload to one host's agent (`host`); see `uploadToCatalog` for the controller's own. */
  async uploadToHost(query: URLSearchParams, body: Readable, contentType: string, length: string | undefined, host: string): Promise<{ results: HostResult[] }> {
    const id = this.targets(host)[0]!;
    return this.onHosts([id], `template ${query.get('name') ?? ''} uploaded`, (client) => client.uploadTemplate(query, body, contentType, length));
  }

  /** Streams an upload into the catalog; `sha256` (optional) is checked. */
  async uploadToCatalog(meta: TemplateMeta, body: Readable, opts: { sha256?: string; declaredBytes?: number } = {}): Promise<TemplateInfo> {
    const t = await this.catalog.upload(meta, body, opts);
    this.log.info(`template ${t.name} uploaded into the catalog (${t.files[0]?.bytes ?? 0} bytes)`);
    return t;
  }

  /**
   * Copies a template a host made (saved from a VM) into the catalog, every file of it (a kernel
   * template's kernel, initrd and disk too), each checked against the host's manifest.
   */
  async copyFromHost(host: string, t: TemplateInfo): Promise<TemplateInfo> {
    const client = this.registry.client(host);
    const copied = await this.catalog.copyIn(t, (f) => client.templateFile(t.name, f.file));
    this.log.info(`template ${t.name} copied into the catalog (${copied.files.map((f) => `${f.role} ${f.bytes} bytes`).join(', ')})`, { hostId: host });
    return copied;
  }

  /**
   * Deletes a template from the catalog and from every host that has it; refused (409, naming them)
   * while a VM uses it.
   */
  async remove(name: string): Promise<{ controller: boolean; results: HostResult[] }> {
    const t = (await this.refreshed()).find((x) => x.name === name);
    if (!t) throw new NotFound(`template "${name.slice(0, 64)}"`);
    const vms = this.usedBy(name);
    if (vms.length > 0) {
      throw new Conflict(`template ${name} is used by ${vms.length === 1 ? 'the VM' : 'the VMs'} ${vms.join(', ')}: delete ${vms.length === 1 ? 'it' : 'them'} first`, { vms });
    }
    if (t.controller) {
      await this.catalog.remove(name);
      this.log.info(`template ${name} deleted from the catalog`);
    }
    if (t.hosts.length === 0) return { controller: t.controller, results: [] };
    try {
      return { controller: t.controller, ...(await this.onHosts(t.hosts, `template ${name} deleted`, (client) => deleteIfThere(client, name))) };
    } catch (err) {
      // the catalog's copy is gone: say what each host did rather than fail the whole answer
      if (!t.controller) throw err;
      const sky = toSkyError(err);
      return { controller: true, results: t.hosts.map((host) => ({ host, ok: false, error: sky.message })) };
    }
  }

  /**
   * Runs `call` on each host's agent, then polls those hosts so the list is current. Answers each
   * host's result; when every host failed, throws (the agent's own error when there was one host).
   */
  private async onHosts(ids: string[], done: string, call: (client: AgentClient) => Promise<unknown>): Promise<{ results: HostResult[] }> {
    const errors: SkyError[] = [];
    const results = await Promise.all(ids.map(async (id): Promise<HostResult> => {
      try {
        await call(this.registry.client(id));
        this.log.info(done, { hostId: id });
        return { host: id, ok: true };
      } catch (err) {
        const sky = toSkyError(err);
        errors.push(sky);
        this.log.warn(`${done.replace(/ \w+$/, '')} failed: ${sky.message}`, { hostId: id });
        return { host: id, ok: false, error: sky.message };
      }
    }));
    await Promise.all(ids.map((id) => {
      const h = this.registry.record(id);
      return h ? this.registry.pollOne(h) : undefined;
    }));
    if (errors.length === ids.length && errors[0]) {
      if (ids.length === 1) throw errors[0];
      throw new SkyError(502, 'failed_on_every_host', `failed on every host: ${errors[0].message}`, { results });
    }
    return { results };
  }
}

/** Deletes a template on a host; one already gone there (e.g. the local agent sharing the catalog's folder in `skyhost up`) is done. */
async function deleteIfThere(client: AgentClient, name: string): Promise<void> {
  try {
    await client.deleteTemplate(name);
  } catch (err) {
    if (toSkyError(err).status !== 404) throw err;
  }
}
