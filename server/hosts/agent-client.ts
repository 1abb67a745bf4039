// Calls to one agent's API (wire/api.ts) over base/http-client.ts: the bearer key from enrollment,
// a timeout on every call, pooled keep-alive connections, errors in the one error model
// (unreachable -> 503 `agent_unreachable`, the agent's 4xx passed on, its 5xx -> 502).
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { HostStatus, TemplateInfo, VmInfo, type VmAction, type VmCreateRequest } from '../../wire/api.ts';
import { HttpClient } from '../../base/http-client.ts';

export interface AgentTarget {
  id: string;
  agentUrl: string;
  agentKey: string;
}

export interface CallOptions {
  timeoutMs?: number;
}

/** The agent's `/healthz` answer (no key needed). */
const Health = z.object({ ok: z.literal(true), hostId: z.string() });

/** Calls to the agent at `target.agentUrl`. Cheap to make: one per call is fine. */
export class AgentClient {
  private readonly target: AgentTarget;
  private readonly http: HttpClient;

  constructor(target: AgentTarget) {
    this.target = target;
    this.http = new HttpClient({
      baseUrl: target.agentUrl, bearer: target.agentKey, connection: 'pooled',
      peer: `host ${target.id}`, codePrefix: 'agent', unreachableDetails: { host: target.id },
    });
  }

  /** `GET /status`, validated against the contract. */
  async status(opts: CallOptions = {}): Promise<HostStatus> {
    return HostStatus.parse(await this.http.call('GET', '/status', undefined, { timeoutMs: opts.timeoutMs ?? 3000 }));
  }

  /** `GET /healthz` without the key: whether something answers there, and as which host. */
  static async health(agentUrl: string, opts: CallOptions = {}): Promise<{ hostId: string }> {
    const http = new HttpClient({ baseUrl: agentUrl, connection: 'pooled', peer: agentUrl, codePrefix: 'agent' });
    return Health.parse(await http.call('GET', '/healthz', undefined, { timeoutMs: opts.timeoutMs ?? 3000 }));
  }

  async createVm(req: VmCreateRequest, opts: CallOptions = {}): Promise<VmInfo> {
    return VmInfo.parse(await this.http.call('POST', '/vms', req, { timeoutMs: opts.timeoutMs ?? 120_000 }));
  }

  async getVm(id: string): Promise<VmInfo> {
    return VmInfo.parse(await this.http.call('GET', `/vms/${encodeURIComponent(id)}`, undefined, { timeoutMs: 10_000 }));
  }

  async vmAction(id: string, action: VmAction): Promise<VmInfo | undefined> {
    const body = await this.http.call('POST', `/vms/${encodeURIComponent(id)}/${action}`, {}, { timeoutMs: 60_000 });
    const parsed = VmInfo.safeParse(body);
    return parsed.success ? parsed.data : undefined;
  }

  async deleteVm(id: string): Promise<void> {
    await this.http.call('DELETE', `/vms/${encodeURIComponent(id)}`, undefined, { timeoutMs: 60_000 });
  }

  async templates(): Promise<TemplateInfo[]> {
    const body = await this.http.call('GET', '/templates', undefined, { timeoutMs: 10_000 });
    const list = Array.isArray(body) ? body : (body as { templates?: unknown }).templates;
    return z.array(TemplateInfo).parse(list ?? []);
  }

  /** `POST /templates` with a JSON body (import from a URL with its sha256). */
  async importTemplate(body: unknown): Promise<unknown> {
    return this.http.call('POST', '/templates', body, { timeoutMs: 30 * 60_000 });
  }

  /** `POST /templates?...` with a file body streamed through (an upload). */
  async uploadTemplate(query: URLSearchParams, body: Readable, contentType: string, length?: string): Promise<unknown> {
    const headers: Record<string, string> = { 'content-type': contentType };
    if (length) headers['content-length'] = length;
    const path = `/templates?${query}`;
    const answer = await this.http.request('POST', path, { body, headers, timeoutMs: 30 * 60_000 });
    if (answer.status >= 200 && answer.status < 300) return answer.body;
    throw this.http.remoteError('POST', path, answer);
  }

  async deleteTemplate(name: string): Promise<void> {
    await this.http.call('DELETE', `/templates/${encodeURIComponent(name)}`, undefined, { timeoutMs: 60_000 });
  }

  /** The agent's WebSocket URL for a path (`/vms/ID/console`) and the headers to open it. */
  socket(path: string): { url: string; headers: Record<string, string> } {
    const url = new URL(path, this.target.agentUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return { url: url.toString(), headers: { authorization: `Bearer ${this.target.agentKey}` } };
  }
}
