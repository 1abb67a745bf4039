// The agent's HTTP API (docs/design.md#agent-api), built from its dependencies so tests run the real app in-process:
// every route but /healthz needs the bearer key; input is checked with wire/api.ts; errors are
// `{ error: { code, message } }`. Consoles are WebSocket upgrades handled by `onUpgrade`.
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { WebSocketServer } from 'ws';
import type { Logger } from '../base/log.ts';
import { BadRequest, fromZod, InvalidField, NotFound, PayloadTooLarge, SkyError, toSkyError, Unauthorized } from '../base/errors.ts';
import { jsonErrors, notFoundRoute } from '../base/http.ts';
import { sameSecret } from '../base/secrets.ts';
import { TemplateImportRequest, TemplateName, VmAction, VmActionRequest, VmCreateRequest, VmId } from '../wire/api.ts';
import { bridgeVnc } from './console.ts';
import { checkTicket } from '../base/tickets.ts';
import { powerRoutes, type PowerControl } from './power.ts';
import type { TemplatePuller } from './pull.ts';
import type { StatusSampler } from './status.ts';
import type { TemplateCatalog } from './templates.ts';
import type { VmManager } from './vms/manager.ts';

export interface AgentAppDeps {
  key: string;
  hostId: string;
  vms: VmManager;
  templates: TemplateCatalog;
  status: StatusSampler;
  log: Logger;
  /** JSON body limit, bytes or e.g. '512kb' (default 512 KiB; a VM's userData may be 64 KiB). */
  bodyLimit?: string | number;
  /** Largest template upload in bytes (default 64 GiB). */
  maxUploadBytes?: number;
  /** Pulls of templates from other machines, and serving files to peers (none: those routes answer 404). */
  pulls?: TemplatePuller;
  /** How `POST /sleep` switches the machine off (none: that route answers 404). */
  power?: PowerControl;
}

export interface AgentApp {
  app: Express;
  /** Handles `upgrade` events of the HTTP server: the serial and VNC console WebSockets. */
  onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Ends every console WebSocket (the agent is stopping): call it before closing the HTTP server, whose close waits for them. */
  close(): void;
}

/** Whether an Authorization header carries the key (compared in constant time). */
export function keyMatches(header: string | undefined, key: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  return m !== null && sameSecret(m[1]!, key);
}

function vmIdParam(req: Request): string {
  const id = String(req.params.id);
  if (!VmId.safeParse(id).success) throw new NotFound(`VM ${JSON.stringify(id.slice(0, 64))}`);
  return id;
}

function parse<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: import('zod').ZodError } }, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) throw fromZod(r.error);
  return r.data;
}

/** `?name=...&sha256=...` of an upload, as the import request's types. */
function importQuery(q: Request['query']): unknown {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(q)) {
    if (typeof v !== 'string') throw new InvalidField(k, 'must be given once');
    out[k] = k === 'minMemoryMiB' && /^\d+$/.test(v) ? Number(v) : k === 'needsKvm' && (v === 'true' || v === 'false') ? v === 'true' : v;
  }
  return out;
}

export function buildAgentApp(deps: AgentAppDeps): AgentApp {
  const { vms, templates, log } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.get('/healthz', (_req, res) => {
    res.json({ ok: true, hostId: deps.hostId });
  });

  // A template's files, for peers pulling it: the agent key, or a pull ticket for this template (base/tickets.ts).
  app.get('/templates/:name/files/:file', async (req, res) => {
    const name = String(req.params.name);
    if (!TemplateName.safeParse(name).success) throw new NotFound(`template ${JSON.stringify(name.slice(0, 64))}`);
    const auth = req.headers.authorization;
    const ticket = keyMatches(auth, deps.key) ? undefined : checkTicket(auth, deps.key, name);
    if (!ticket && !keyMatches(auth, deps.key)) throw new Unauthorized(`missing or wrong agent key or pull ticket for template ${name}`);
    if (!deps.pulls) throw new NotFound(`file ${String(req.params.file).slice(0, 64)} of template ${name}`);
    if (ticket) log.debug(`serving template ${name} to host ${ticket.h}`, { file: req.params.file, range: req.headers.range });
    await deps.pulls.serve(req, res, name, String(req.params.file));
  });

  app.use((req: Request, _res: Response, next: NextFunction) => {
    next(keyMatches(req.headers.authorization, deps.key) ? undefined : new Unauthorized('missing or wrong agent key (Authorization: Bearer KEY)'));
  });
  app.use(express.json({ limit: deps.bodyLimit ?? '512kb' }));

  powerRoutes(app, deps.power, log);

  app.get('/status', (_req, res) => {
    const pulls = deps.pulls?.list() ?? [];
    res.json(pulls.length > 0 ? { ...deps.status.status(), pulls } : deps.status.status());
  });

  const createVm = async (req: Request, res: Response) => {
    const body = parse(VmCreateRequest, req.body ?? {});
    const vm = await vms.create(body);
    res.status(201).json(vm);
    void deps.status.refresh(); // the next poll sees the new VM; refresh() logs its own failures
  };
  app.post('/start-vm', createVm);
  app.post('/vms', createVm);
  // a VM may have powered itself off since the last background sample: states here are at most 1 s old
  const freshStates = () => vms.refreshIfOlder(1000).catch((err: unknown) => {
    log.warn('could not read VM states from the hypervisor: answering the last known ones', { err });
  });
  app.get('/vms', async (_req, res) => {
    await freshStates();
    res.json(vms.list());
  });
  app.get('/vms/:id', async (req, res) => {
    const id = vmIdParam(req);
    await freshStates();
    res.json(vms.get(id));
  });
  app.delete('/vms/:id', async (req, res) => {
    await vms.delete(vmIdParam(req));
    res.status(204).end();
    void deps.status.refresh(); // the next poll sees the memory it gave back; refresh() logs its own failures
  });
  app.get(['/vms/:id/console', '/vms/:id/vnc'], (req, res) => {
    vms.get(vmIdParam(req));
    res.status(426).set('Upgrade', 'websocket').json({ error: { code: 'upgrade_required', message: 'this is a WebSocket endpoint' } });
  });
  app.post('/vms/:id/save-as-template', async (req, res) => {
    const t = await vms.saveAsTemplate(vmIdParam(req), req.body ?? {});
    await deps.status.refresh(); // the answer's template is in /status from now on; refresh() logs its own failures
    res.status(201).json(t);
  });
  app.post('/vms/:id/reset', async (req, res) => {
    res.json(await vms.reset(vmIdParam(req)));
    void deps.status.refresh(); // logs its own failures
  });
  app.post('/vms/:id/:action', async (req, res) => {
    const id = vmIdParam(req);
    const action = VmAction.safeParse(req.params.action);
    if (!action.success) throw new NotFound(`action ${JSON.stringify(String(req.params.action).slice(0, 32))} (use start, shutdown, poweroff or reboot)`);
    const opts = parse(VmActionRequest, req.body ?? {});
    res.json(await vms.action(id, action.data, opts));
    void deps.status.refresh(); // logs its own failures
  });

  app.get('/templates', async (_req, res) => {
    res.json(await templates.list());
  });
  app.post('/templates', async (req, res) => {
    const isUpload = req.is('application/octet-stream');
    const desc = parse(TemplateImportRequest, isUpload ? importQuery(req.query) : (req.body ?? {}));
    if (!isUpload && !desc.url) throw new InvalidField('url', 'give a URL to download (with sha256), or upload the image as application/octet-stream');
    if (desc.url && !desc.sha256) throw new InvalidField('sha256', 'is required with url');
    if (await templates.get(desc.name)) throw new SkyError(409, 'conflict', `template ${desc.name} already exists`);
    const tmpDir = path.join(templates.dir, `.upload-${randomBytes(6).toString('hex')}`);
    await mkdir(tmpDir, { recursive: true });
    try {
      const file = path.join(tmpDir, 'image');
      if (isUpload) await receive(req, file, deps.maxUploadBytes ?? 64 * 1024 ** 3);
      else await download(desc.url!, file);
      const t = await templates.import({
        name: desc.name,
        ...(desc.kind === 'iso' ? { iso: file } : { disk: file }),
        ...(desc.sha256 ? { sha256: [desc.sha256] } : {}),
        ...(desc.os ? { os: desc.os } : {}),
        ...(desc.description ? { description: desc.description } : {}),
        ...(desc.minMemoryMiB ? { minMemoryMiB: desc.minMemoryMiB } : {}),
        ...(desc.console ? { console: desc.console } : {}),
        ...(desc.needsKvm !== undefined ? { needsKvm: desc.needsKvm } : {}),
        ...(desc.ssh ? { ssh: true } : {}),
      });
      void deps.status.refresh(); // logs its own failures
      res.status(201).json(t);
    } finally {
      await rm(tmpDir, { recursive: true, force: true });
    }
  });
  // Fetch a template from the sources given (the controller, peers): 202 with its progress; a second request joins the first.
  app.post('/templates/pull', async (req, res) => {
    if (!deps.pulls) throw new SkyError(501, 'not_supported', 'this agent does not pull templates');
    const progress = await deps.pulls.start(req.body ?? {});
    res.status(progress.state === 'done' ? 200 : 202).json(progress);
  });
  app.get('/templates/pulls/:name', (req, res) => {
    const p = deps.pulls?.progress(String(req.params.name));
    if (!p) throw new NotFound(`pull of template ${JSON.stringify(String(req.params.name).slice(0, 64))}`);
    res.json(p);
  });
  app.delete('/templates/:name', async (req, res) => {
    const name = String(req.params.name);
    if (!TemplateName.safeParse(name).success) throw new NotFound(`template ${JSON.stringify(name.slice(0, 64))}`);
    await templates.remove(name, async (n) => vms.usersOf(n));
    void deps.status.refresh(); // logs its own failures
    res.status(204).end();
  });

  app.use(notFoundRoute);
  app.use(jsonErrors(log));

  const wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 });
  // every console connection, upgraded or still being answered: the HTTP server's close waits for each of them
  const consoleSockets = new Set<Duplex>();
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    consoleSockets.add(socket);
    socket.once('close', () => consoleSockets.delete(socket));
    // a client gone mid-handshake: nothing to answer, and the socket is closed either way
    socket.on('error', (err) => log.debug('console client connection broke', { err }));
    void (async () => {
      try {
        if (!keyMatches(req.headers.authorization, deps.key)) throw new Unauthorized('missing or wrong agent key (Authorization: Bearer KEY)');
        const url = new URL(req.url ?? '/', 'http://agent');
        const m = /^\/vms\/([^/]+)\/(console|vnc)$/.exec(url.pathname);
        if (!m) throw new NotFound(`WebSocket ${url.pathname.slice(0, 100)}`);
        const id = decodeURIComponent(m[1]!);
        if (!VmId.safeParse(id).success) throw new NotFound(`VM ${JSON.stringify(id.slice(0, 64))}`);
        if (m[2] === 'console') {
          const bridge = vms.bridge(id);
          wss.handleUpgrade(req, socket, head, (ws) => bridge.attach(ws));
        } else {
          const port = await vms.vncPort(id);
          wss.handleUpgrade(req, socket, head, (ws) => bridgeVnc(ws, port));
        }
      } catch (err) {
        const sky = toSkyError(err);
        if (sky.status >= 500) log.error('console upgrade failed', { err });
        const body = JSON.stringify(sky.toBody());
        socket.end(`HTTP/1.1 ${sky.status} ${sky.code}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      }
    })();
  };
  const closeConsoles = () => {
    for (const ws of wss.clients) ws.terminate();
    wss.close();
    for (const socket of consoleSockets) socket.destroy();
  };
  return { app, onUpgrade, close: closeConsoles };
}

/** Streams a request body to `file`, refusing more than `limit` bytes. */
async function receive(req: Request, file: string, limit: number): Promise<void> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new PayloadTooLarge(`${limit} bytes`);
  let seen = 0;
  await pipeline(
    req,
    async function* (src: AsyncIterable<Buffer>) {
      for await (const chunk of src) {
        seen += chunk.length;
        if (seen > limit) throw new PayloadTooLarge(`${limit} bytes`);
        yield chunk;
      }
    },
    createWriteStream(file, { mode: 0o644 }),
  );
  if (seen === 0) throw new BadRequest('the upload is empty');
}

/** Downloads `url` to `file`. */
async function download(url: string, file: string): Promise<void> {
  const res = await fetch(url, { redirect: 'follow', signal: AbortSignal.timeout(3_600_000) }).catch((err: unknown) => {
    throw new SkyError(502, 'download_failed', `could not download ${url}: ${(err as Error).message}`);
  });
  if (!res.ok || !res.body) throw new SkyError(502, 'download_failed', `could not download ${url}: HTTP ${res.status}`);
  await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(file, { mode: 0o644 }));
}
