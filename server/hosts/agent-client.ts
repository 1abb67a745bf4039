// Calls to one agent's API (wire/api.ts) over base/http-client.ts: the bearer key from enrollment,
// a timeout on every call, pooled keep-alive connections, errors in the one error model
// (unreachable -> 503 `agent_unreachable`, the agent's 4xx passed on, its 5xx -> 502).
// An https:// agent is pinned to the certificate it enrolled with: nothing (not its key) goes to
// another one (502 `untrusted_peer`), and its console WebSocket goes through the same pinned agent.
import { get as httpGet, type Agent, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { HostStatus, PullProgress, TemplateInfo, VmInfo, type PullRequest, type VmAction, type VmCreateRequest, type VmSaveAsTemplateRequest } from '../../wire/api.ts';
import { HttpClient, pinnedPool } from '../../base/http-client.ts';
import { SkyError, Unavailable } from '../../base/errors.ts';

export interface AgentTarget {
  id: string;
  agentUrl: string;
  agentKey: string;
  /** sha256 of the agent's certificate (pinned at enrollment); required for an https:// agentUrl. */
  agentFingerprint?: string | undefined;
}

export interface CallOptions {
  timeoutMs?: number;
}

/** The pin for a URL: an https:// agent is trusted by its fingerprint only (none pinned: nothing is trusted). */
function pinFor(agentUrl: string, fingerprint: string | undefined): string | undefined {
  if (!agentUrl.startsWith('https:')) return undefined;
  return fingerprint ?? '0'.repeat(64); // no fingerprint for an https:// URL: no certificate matches, the call is refused
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
      pin: pinFor(target.agentUrl, target.agentFingerprint),
    });
  }

  /** `GET /status`, validated against the contract. */
  async status(opts: CallOptions = {}): Promise<HostStatus> {
    return HostStatus.parse(await this.http.call('GET', '/status', undefined, { timeoutMs: opts.timeoutMs ?? 3000 }));
  }

  /** `GET /healthz` without the key: whether something answers there, and as which host. */
  static async health(agentUrl: string, opts: CallOptions & { pin?: string | undefined } = {}): Promise<{ hostId: string }> {
    const http = new HttpClient({ baseUrl: agentUrl, connection: 'pooled', peer: agentUrl, codePrefix: 'agent', pin: pinFor(agentUrl, opts.pin) });
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

  /** `POST /vms/:id/save-as-template`: the new template (flattening a disk takes a while). */
  async saveVmAsTemplate(id: string, body: VmSaveAsTemplateRequest): Promise<TemplateInfo> {
    return TemplateInfo.parse(await this.http.call('POST', `/vms/${encodeURIComponent(id)}/save-as-template`, body, { timeoutMs: 60 * 60_000 }));
  }

  /**
   * `GET /templates/:name/files/:file`: one of a template's files as the host holds it, streamed (the
   * answer's body); through the pinned connection for an https:// agent. Not 200: a 502 saying so.
   */
  templateFile(name: string, file: string, timeoutMs = 60_000): Promise<IncomingMessage> {
    const url = new URL(`/templates/${encodeURIComponent(name)}/files/${encodeURIComponent(file)}`, this.target.agentUrl);
    const pin = pinFor(this.target.agentUrl, this.target.agentFingerprint);
    const get = url.protocol === 'https:' ? httpsGet : httpGet;
    return new Promise((resolve, reject) => {
      const req = get(url, { headers: { authorization: `Bearer ${this.target.agentKey}` }, timeout: timeoutMs, ...(pin ? { agent: pinnedPool(pin) } : {}) }, (res) => {
        if (res.statusCode === 200) return resolve(res);
        res.resume(); // the error's body is not needed: its status says it
        reject(new SkyError(502, 'agent_error', `host ${this.target.id} answered HTTP ${res.statusCode} for file ${file} of template ${name}`));
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', (err) => reject(new Unavailable(`host ${this.target.id} is unreachable: ${err.message}`, { host: this.target.id }, 'agent_unreachable')));
    });
  }

  /** `POST /vms/:id/reset`: the VM afterwards. */
  async resetVm(id: string): Promise<VmInfo> {
    return VmInfo.parse(await this.http.call('POST', `/vms/${encodeURIComponent(id)}/reset`, {}, { timeoutMs: 5 * 60_000 }));
  }

  /** `POST /sleep`: the agent answers, then switches its machine off (agent/power.ts). */
  async sleep(): Promise<void> {
    await this.http.call('POST', '/sleep', {}, { timeoutMs: 10_000 });
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

  /** `POST /templates/pull` (server/templates/distribute.ts): the agent starts or joins the pull, answers its progress. */
  async pullTemplate(body: PullRequest): Promise<PullProgress> {
    return PullProgress.parse(await this.http.call('POST', '/templates/pull', body, { timeoutMs: 30_000 }));
  }

  /** `GET /templates/pulls/:name`: how far the agent's pull of a template is. */
  async pullProgress(name: string): Promise<PullProgress> {
    return PullProgress.parse(await this.http.call('GET', `/templates/pulls/${encodeURIComponent(name)}`, undefined, { timeoutMs: 10_000 }));
  }

  /**
   * The agent's WebSocket URL for a path (`/vms/ID/console`), the headers to open it, and for a
   * wss:// URL the pinned connection agent to open it with (`new WebSocket(url, { headers, agent })`).
   */
  socket(path: string): { url: string; headers: Record<string, string>; agent?: Agent } {
    const url = new URL(path, this.target.agentUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const pin = pinFor(this.target.agentUrl, this.target.agentFingerprint);
    return { url: url.toString(), headers: { authorization: `Bearer ${this.target.agentKey}` }, ...(pin ? { agent: pinnedPool(pin) } : {}) };
  }
}
