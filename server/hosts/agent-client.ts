// HTTP client of one agent's API (wire/api.ts): bearer key from enrollment, a timeout on every call,
// and errors in the one error model (unreachable -> 503, the agent's own error passed on).
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { HostStatus, TemplateInfo, VmInfo, type VmAction, type VmCreateRequest } from '../../wire/api.ts';
import { SkyError, Unavailable } from '../../base/errors.ts';

export interface AgentTarget {
  id: string;
  agentUrl: string;
  agentKey: string;
}

export interface CallOptions {
  timeoutMs?: number;
}

/** Calls to the agent at `target.agentUrl`. Cheap to make: one per call is fine. */
export class AgentClient {
  private readonly target: AgentTarget;

  constructor(target: AgentTarget) {
    this.target = target;
  }

  /** `GET /status`, validated against the contract. */
  async status(opts: CallOptions = {}): Promise<HostStatus> {
    return HostStatus.parse(await this.call('GET', '/status', undefined, opts.timeoutMs ?? 3000));
  }

  async createVm(req: VmCreateRequest, opts: CallOptions = {}): Promise<VmInfo> {
    return VmInfo.parse(await this.call('POST', '/vms', req, opts.timeoutMs ?? 120_000));
  }

  async getVm(id: string): Promise<VmInfo> {
    return VmInfo.parse(await this.call('GET', `/vms/${encodeURIComponent(id)}`, undefined, 10_000));
  }

  async vmAction(id: string, action: VmAction): Promise<VmInfo | undefined> {
    const body = await this.call('POST', `/vms/${encodeURIComponent(id)}/${action}`, {}, 60_000);
    const parsed = VmInfo.safeParse(body);
    return parsed.success ? parsed.data : undefined;
  }

  async deleteVm(id: string): Promise<void> {
    await this.call('DELETE', `/vms/${encodeURIComponent(id)}`, undefined, 60_000);
  }

  async templates(): Promise<TemplateInfo[]> {
    const body = await this.call('GET', '/templates', undefined, 10_000);
    const list = Array.isArray(body) ? body : (body as { templates?: unknown }).templates;
    return z.array(TemplateInfo).parse(list ?? []);
  }

  /** `POST /templates` with a JSON body (import from a URL with its sha256). */
  async importTemplate(body: unknown): Promise<unknown> {
    return this.call('POST', '/templates', body, 30 * 60_000);
  }

  /** `POST /templates?...` with a file body streamed through (an upload). */
  async uploadTemplate(query: URLSearchParams, body: Readable, contentType: string, length?: string): Promise<unknown> {
    const headers: Record<string, string> = { 'content-type': contentType };
    if (length) headers['content-length'] = length;
    return this.request('POST', `/templates?${query}`, headers, body, 30 * 60_000);
  }

  async deleteTemplate(name: string): Promise<void> {
    await this.call('DELETE', `/templates/${encodeURIComponent(name)}`, undefined, 60_000);
  }

  /** The agent's WebSocket URL for a path (`/vms/ID/console`) and the headers to open it. */
  socket(path: string): { url: string; headers: Record<string, string> } {
    const url = new URL(path, this.target.agentUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return { url: url.toString(), headers: { authorization: `Bearer ${this.target.agentKey}` } };
  }

  private call(method: string, path: string, body: unknown, timeoutMs: number): Promise<unknown> {
    const json = body === undefined ? undefined : JSON.stringify(body);
    return this.request(method, path, json === undefined ? {} : { 'content-type': 'application/json' }, json, timeoutMs);
  }

  private async request(method: string, path: string, headers: Record<string, string>, body: string | Readable | undefined, timeoutMs: number): Promise<unknown> {
    const url = new URL(path, this.target.agentUrl);
    let res: { status: number; text: string };
    try {
      res = await send(url, method, { ...headers, authorization: `Bearer ${this.target.agentKey}`, accept: 'application/json' }, body, timeoutMs);
    } catch (err) {
      const why = (err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (err as Error).message;
      throw new Unavailable(`host ${this.target.id} is unreachable: ${why}`, { host: this.target.id }, 'agent_unreachable');
    }
    let data: unknown = undefined;
    try {
      data = res.text ? JSON.parse(res.text) : undefined;
    } catch {
      data = undefined;
    }
    if (res.status < 200 || res.status >= 300) {
      const e = (data as { error?: { code?: string; message?: string; details?: unknown } } | undefined)?.error;
      const message = `host ${this.target.id}: ${e?.message ?? `${method} ${path} answered ${res.status}`}`;
      // The agent's 4xx is about the request and is passed on; its 5xx is a failure on the host (502).
      if (res.status >= 400 && res.status < 500) throw new SkyError(res.status, e?.code ?? 'agent_rejected', message, e?.details);
      throw new SkyError(502, e?.code ?? 'agent_error', message, e?.details);
    }
    return data;
  }
}

// One keep-alive pool for every agent: node:http holds far less memory per host than fetch (undici)
// keeps per origin, which matters when the controller polls hundreds of hosts.
const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 8, maxFreeSockets: 1, timeout: 60_000 });
const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 8, maxFreeSockets: 1, timeout: 60_000 });

/** One HTTP request with a deadline for the whole exchange; resolves with the status and body text. */
function send(url: URL, method: string, headers: Record<string, string>, body: string | Readable | undefined, timeoutMs: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const lib = url.protocol === 'https:' ? https : http;
    if (typeof body === 'string') headers['content-length'] = String(Buffer.byteLength(body));
    const req = lib.request(url, { method, headers, agent: url.protocol === 'https:' ? httpsAgent : httpAgent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', fail);
    });
    const timer = setTimeout(() => {
      const err = new Error(`no answer within ${timeoutMs} ms`);
      err.name = 'TimeoutError';
      req.destroy(err);
    }, timeoutMs);
    function fail(err: Error): void {
      clearTimeout(timer);
      reject(err);
    }
    req.on('error', fail);
    if (body === undefined || typeof body === 'string') req.end(body);
    else body.pipe(req);
  });
}
