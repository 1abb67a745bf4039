// API documentation for people: `GET /docs` shows the controller's OpenAPI document and the agent's
// in Swagger UI, served from the executable (base/assets.ts: static/vendor/swagger-ui/), no CDN.
// The agent's routes are plain Express routes in agent/app.ts (docs/design.md#agent-api), not
// declared through ApiRouter: AGENT_OPERATIONS describes them, and the API docs test compares it with
// the agent app's router, so a route added there without a line here fails that test.
import { Router } from 'express';
import { z } from 'zod';
import {
  HostStatus, PullProgress, PullRequest, TemplateImportRequest, TemplateInfo, VmActionRequest, VmCreateRequest, VmInfo, VmSaveAsTemplateRequest,
} from '../../wire/api.ts';
import { viewer } from '../pages/forms.ts';
import { render } from '../pages/render.ts';
import { openApiDocument } from './openapi.ts';
import type { ApiRouter, Operation } from './route.ts';

const Health = z.object({ ok: z.literal(true), hostId: z.string() });
const WEBSOCKET = { 101: 'switching to the WebSocket', 426: 'not a WebSocket request (Upgrade: websocket needed)' };

/** Every route of the agent's API (agent/app.ts), as the controller's routes describe theirs. */
export const AGENT_OPERATIONS: readonly Operation[] = [
  { method: 'get', path: '/healthz', summary: 'Whether the agent answers, and its host id (no key)', auth: 'none', responses: { 200: Health } },
  { method: 'get', path: '/status', summary: 'The host: CPU, memory, disk, hypervisor, templates, every VM, its view of the controller', auth: 'agent', responses: { 200: HostStatus } },
  {
    method: 'post', path: '/sleep', summary: 'Switch this PC off (the hosts page\'s "Put to sleep"): 202, then the power-off command; Wake-on-LAN brings it back', auth: 'agent',
    responses: { 202: z.object({ sleeping: z.literal(true), command: z.string() }), 404: 'this agent cannot switch its machine off' },
  },
  { method: 'post', path: '/vms', summary: 'Create and start a VM (the template rules refuse with the scheduler\'s reason codes)', auth: 'agent', body: VmCreateRequest, responses: { 201: VmInfo } },
  { method: 'post', path: '/start-vm', summary: 'The original design\'s create: the same as POST /vms', auth: 'agent', body: VmCreateRequest, responses: { 201: VmInfo } },
  { method: 'get', path: '/vms', summary: 'Every VM of this agent (states at most 1 s old)', auth: 'agent', responses: { 200: z.array(VmInfo) } },
  { method: 'get', path: '/vms/:id', summary: 'One VM', auth: 'agent', responses: { 200: VmInfo } },
  { method: 'delete', path: '/vms/:id', summary: 'Delete a VM: its domain, disk, seed, DHCP entry and SSH forward', auth: 'agent', responses: { 204: 'deleted' } },
  { method: 'get', path: '/vms/:id/console', summary: 'The serial console (WebSocket, bytes both ways; the last 64 KiB first)', auth: 'agent', responses: WEBSOCKET },
  { method: 'get', path: '/vms/:id/vnc', summary: 'The graphical console (WebSocket to the VM\'s VNC server)', auth: 'agent', responses: WEBSOCKET },
  { method: 'post', path: '/vms/:id/save-as-template', summary: 'Save a stopped VM\'s disk as a new template of this host', auth: 'agent', body: VmSaveAsTemplateRequest, responses: { 201: TemplateInfo } },
  { method: 'post', path: '/vms/:id/reset', summary: 'A fresh disk from the VM\'s template (same id, name, MAC, address, SSH port)', auth: 'agent', responses: { 200: VmInfo } },
  {
    method: 'post', path: '/vms/:id/:action', summary: 'Start, shut down (ACPI, waits for the guest), power off or reboot', auth: 'agent',
    params: { action: z.enum(['start', 'shutdown', 'poweroff', 'reboot']) }, body: VmActionRequest, responses: { 200: VmInfo },
  },
  { method: 'get', path: '/templates', summary: 'The templates on this host', auth: 'agent', responses: { 200: z.array(TemplateInfo) } },
  {
    method: 'post', path: '/templates', summary: 'Import a template: a URL with its sha256 (the agent downloads), or an upload with the same fields in the query',
    auth: 'agent', body: TemplateImportRequest, upload: 'the image (the fields in the query string)', responses: { 201: TemplateInfo },
  },
  { method: 'delete', path: '/templates/:name', summary: 'Remove a template (409 while a VM uses it)', auth: 'agent', responses: { 204: 'removed' } },
  { method: 'post', path: '/templates/pull', summary: 'Fetch a template from the controller or peers, resuming from source to source', auth: 'agent', body: PullRequest, responses: { 200: PullProgress, 202: PullProgress } },
  { method: 'get', path: '/templates/pulls/:name', summary: 'A pull under way or ended in the last 10 minutes', auth: 'agent', responses: { 200: PullProgress } },
  {
    method: 'get', path: '/templates/:name/files/:file', summary: 'A template\'s file for a peer (the agent key or a pull ticket: Authorization: Ticket ...)', auth: 'agent',
    headers: { Range: 'bytes=START- to continue a transfer (206, 416)' }, responses: { 200: 'the file', 206: 'part of the file' },
  },
];

let agentDocument: unknown;

/** The agent API's OpenAPI 3.1 document (`GET /api/openapi-agent.json`). */
export function agentApiDocument(): unknown {
  if (agentDocument) return agentDocument;
  const doc = openApiDocument(AGENT_OPERATIONS) as { info: { version: string }; components: { securitySchemes: Record<string, unknown> } };
  agentDocument = {
    ...doc,
    info: {
      title: 'SkyHost agent API', version: doc.info.version,
      description: 'What the controller (and a person with the key) calls on every host, at https://HOST:8081. Every route but /healthz needs the agent key as Authorization: Bearer KEY. Errors are { "error": { "code", "message", "details"? } }. See docs/design.md#agent-api.',
    },
    components: { securitySchemes: { agentKey: { type: 'http', scheme: 'bearer', description: 'the agent key (--key, config agentKey, or DATA/secrets/agent-key)' } } },
  };
  return agentDocument;
}

/** `GET /api/openapi-agent.json`, registered with the controller's other routes. */
export function docsRoutes(api: ApiRouter): void {
  api.route({ method: 'get', path: '/api/openapi-agent.json', summary: 'The agent API\'s OpenAPI document (shown on /docs)', auth: 'none', responses: { 200: 'the OpenAPI 3.1 document of the agent API' } }, (_req, res) => {
    res.json(agentApiDocument());
  });
}

/** `GET /docs`: both documents in Swagger UI, with a selector (no sign-in: the documents are public). */
export function docsPage(): Router {
  const r = Router();
  r.get('/docs', viewer, (req, res) => {
    render(req, res, { page: 'docs', title: 'API docs', styles: ['/static/vendor/swagger-ui/swagger-ui.css', '/static/api-docs.css'] });
  });
  return r;
}
