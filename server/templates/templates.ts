// Templates across the cluster: the union of what every host reports in `/status`, and imports,
// uploads and deletions forwarded to the agents that hold (or should hold) the files.
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { TemplateImportRequest, type TemplateInfo } from '../../wire/api.ts';
import { NotFound, SkyError, Unavailable, toSkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import type { AgentClient } from '../hosts/agent-client.ts';
import type { HostRegistry } from '../hosts/registry.ts';

/** A template as the controller lists it: the manifest plus which hosts have it. */
export const ClusterTemplate = z.object({
  name: z.string(),
  kind: z.enum(['disk', 'kernel', 'iso']),
  os: z.string(),
  description: z.string().optional(),
  minMemoryMiB: z.number().int(),
  console: z.enum(['serial', 'vnc']),
  needsKvm: z.boolean(),
  /** Total size of its files. */
  bytes: z.number().int(),
  /** Size of its disk as the guest sees it, in GiB (rounded up); 0 for a kernel-only template. */
  diskGiB: z.number().int(),
  /** Ids of the hosts that have it. */
  hosts: z.array(z.string()),
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
  return {
    name: t.name, kind: t.kind, os: t.os, ...(t.description ? { description: t.description } : {}),
    minMemoryMiB: t.minMemoryMiB, console: t.console, needsKvm: t.needsKvm, bytes,
    diskGiB: disk ? Math.max(1, Math.ceil((disk.virtualBytes ?? disk.bytes) / GiB)) : 0, hosts: [],
  };
}

export class Templates {
  private readonly registry: HostRegistry;
  private readonly log: Logger;

  constructor(registry: HostRegistry, log: Logger) {
    this.registry = registry;
    this.log = log;
  }

  /** Every template some host reports, by name, with the hosts that have it. */
  list(): ClusterTemplate[] {
    const byName = new Map<string, ClusterTemplate>();
    for (const h of this.registry.records()) {
      for (const t of h.status?.templates ?? []) {
        let entry = byName.get(t.name);
        if (!entry) byName.set(t.name, entry = toClusterTemplate(t));
        entry.hosts.push(h.id);
      }
    }
    return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** One template by name (the first host's manifest), or undefined. */
  find(name: string): ClusterTemplate | undefined {
    return this.list().find((t) => t.name === name);
  }

  /** Hosts that take an import: the one named, or every ready host. */
  private targets(host?: string): string[] {
    if (host) return [this.registry.require(host).id];
    const ready = this.registry.records().filter((h) => h.state === 'ready').map((h) => h.id);
    if (ready.length === 0) throw new Unavailable('no host is ready to take the template');
    return ready;
  }

  /** Asks the agents to download and check a template; answers each host's result. */
  async import(input: TemplateImport): Promise<{ results: HostResult[] }> {
    const req = TemplateImport.parse(input);
    const { host, ...body } = req;
    return this.onHosts(this.targets(host), `template ${req.name} imported`, (client) => client.importTemplate(body));
  }

  /** Streams an upload to one host's agent (`host`, or the first ready host). */
  async upload(query: URLSearchParams, body: Readable, contentType: string, length: string | undefined, host?: string): Promise<{ results: HostResult[] }> {
    const id = this.targets(host)[0]!;
    return this.onHosts([id], `template ${query.get('name') ?? ''} uploaded`, (client) => client.uploadTemplate(query, body, contentType, length));
  }

  /** Deletes a template from every host that has it. */
  async remove(name: string): Promise<{ results: HostResult[] }> {
    const t = this.find(name);
    if (!t) throw new NotFound(`template "${name}"`);
    return this.onHosts(t.hosts, `template ${name} deleted`, (client) => client.deleteTemplate(name));
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
