// `GET /api/openapi.json`: the API described from the same zod schemas the routes validate with
// (zod 4's `z.toJSONSchema`), so the description cannot drift from what is enforced.
import { z } from 'zod';
import { EnrollResponse, VmAction } from '../../wire/api.ts';
import { VERSION } from '../../base/version.ts';
import { Event } from '../events/events.ts';
import { ControllerEnrollRequest, Host } from '../hosts/registry.ts';
import { ClusterTemplate, TemplateImport } from '../templates/templates.ts';
import { ApiToken, User } from '../users/users.ts';
import { RequestVmAnswer, Vm, VmList, VmRequest } from '../vms/schemas.ts';
import {
  AgentEvents, JoinTokenCreate, JoinTokenRevoke, LoginRequest, PasswordChange, RegisterRequest, Settings, TokenCreate, UserCreate, UserUpdate,
  WakeRequest,
} from './schemas.ts';

type Auth = 'none' | 'user' | 'admin' | 'agent';

interface Op {
  method: 'get' | 'post' | 'put' | 'patch' | 'delete';
  path: string;
  summary: string;
  auth: Auth;
  body?: z.ZodType;
  ok: number;
  answer?: z.ZodType;
  params?: string[];
  query?: Record<string, string>;
  headers?: Record<string, string>;
}

const ErrorBody = z.object({ error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }) });

const OPS: Op[] = [
  { method: 'post', path: '/api/login', summary: 'Sign in; sets the session cookie and returns the CSRF token', auth: 'none', body: LoginRequest, ok: 200,
    answer: z.object({ user: User, csrfToken: z.string(), mustChangePassword: z.boolean() }) },
  { method: 'post', path: '/api/logout', summary: 'End the session', auth: 'none', ok: 204 },
  { method: 'post', path: '/api/register', summary: 'Create an account (only when self-registration is on)', auth: 'none', body: RegisterRequest, ok: 201,
    answer: z.object({ user: User }) },
  { method: 'get', path: '/api/me', summary: 'The signed-in user', auth: 'user', ok: 200, answer: z.object({ user: User, csrfToken: z.string().optional() }) },
  { method: 'post', path: '/api/me/password', summary: 'Change my password (the first admin login must)', auth: 'user', body: PasswordChange, ok: 200,
    answer: z.object({ user: User }) },
  { method: 'get', path: '/api/tokens', summary: 'My API tokens', auth: 'user', ok: 200, answer: z.object({ tokens: z.array(ApiToken) }) },
  { method: 'post', path: '/api/tokens', summary: 'Make an API token (shown once)', auth: 'user', body: TokenCreate, ok: 201,
    answer: ApiToken.extend({ token: z.string() }) },
  { method: 'delete', path: '/api/tokens/{id}', summary: 'Revoke one of my API tokens', auth: 'user', ok: 204, params: ['id'] },
  { method: 'get', path: '/api/users', summary: 'Every user', auth: 'admin', ok: 200, answer: z.object({ users: z.array(User) }) },
  { method: 'post', path: '/api/users', summary: 'Create a user', auth: 'admin', body: UserCreate, ok: 201, answer: z.object({ user: User }) },
  { method: 'patch', path: '/api/users/{name}', summary: 'Change a user\'s role or password', auth: 'admin', body: UserUpdate, ok: 200, params: ['name'],
    answer: z.object({ user: User }) },
  { method: 'delete', path: '/api/users/{name}', summary: 'Remove a user (who has no VMs)', auth: 'admin', ok: 204, params: ['name'] },
  { method: 'get', path: '/api/settings', summary: 'Cluster settings', auth: 'admin', ok: 200, answer: Settings },
  { method: 'put', path: '/api/settings', summary: 'Change cluster settings', auth: 'admin', body: Settings, ok: 200, answer: Settings },
  { method: 'post', path: '/api/enroll', summary: 'An agent joins: a valid join token makes it ready, none leaves it pending', auth: 'none',
    body: ControllerEnrollRequest, ok: 200, answer: EnrollResponse },
  { method: 'get', path: '/api/hosts', summary: 'Hosts with state, capacity, usage, templates, last seen', auth: 'user', ok: 200,
    answer: z.object({ hosts: z.array(Host) }) },
  { method: 'get', path: '/api/hosts/{id}', summary: 'One host', auth: 'user', ok: 200, params: ['id'], answer: Host },
  { method: 'post', path: '/api/hosts/{id}/approve', summary: 'Approve a pending host', auth: 'admin', ok: 200, params: ['id'], answer: Host },
  { method: 'post', path: '/api/hosts/{id}/drain', summary: 'Take no new VMs on this host', auth: 'admin', ok: 200, params: ['id'], answer: Host },
  { method: 'post', path: '/api/hosts/{id}/undrain', summary: 'Put a draining host back in service', auth: 'admin', ok: 200, params: ['id'], answer: Host },
  { method: 'post', path: '/api/hosts/{id}/wake', summary: 'Send Wake-on-LAN to the host (its MAC, or the one given, remembered)', auth: 'admin',
    body: WakeRequest, ok: 200, params: ['id'], answer: z.object({ host: Host, sent: z.boolean(), mac: z.string() }) },
  { method: 'delete', path: '/api/hosts/{id}', summary: 'Forget a host (409 while it has VM records, unless ?force=true)', auth: 'admin', ok: 204,
    params: ['id'], query: { force: 'true: also forget its VM records' } },
  { method: 'get', path: '/api/join-tokens', summary: 'The cluster join token and the single-use tokens', auth: 'admin', ok: 200 },
  { method: 'post', path: '/api/join-tokens', summary: 'Make a single-use join token', auth: 'admin', body: JoinTokenCreate, ok: 201 },
  { method: 'post', path: '/api/join-tokens/rotate', summary: 'Replace the cluster join token', auth: 'admin', ok: 200 },
  { method: 'post', path: '/api/join-tokens/{id}/revoke', summary: 'Revoke a single-use join token', auth: 'admin', body: JoinTokenRevoke, ok: 200,
    params: ['id'] },
  { method: 'get', path: '/api/vms', summary: 'My VMs (an admin: every VM)', auth: 'user', ok: 200, answer: VmList,
    query: { host: 'only on this host', state: 'only in this state', owner: 'only of this user' } },
  { method: 'post', path: '/api/vms', summary: 'Request a VM: 201 running, 202 creating (poll GET /api/vms/{id}); 503 no_host_fits with reasons',
    auth: 'user', body: VmRequest, ok: 201, answer: Vm, headers: { 'Idempotency-Key': 'a retried request with the same key returns the first answer' } },
  { method: 'post', path: '/request-vm', summary: 'The original design\'s request: same body as POST /api/vms', auth: 'user', body: VmRequest, ok: 201,
    answer: RequestVmAnswer, headers: { 'Idempotency-Key': 'as for POST /api/vms' } },
  { method: 'get', path: '/api/vms/{id}', summary: 'One VM (another user\'s VM is a 404)', auth: 'user', ok: 200, params: ['id'], answer: Vm },
  { method: 'delete', path: '/api/vms/{id}', summary: 'Delete a VM and its disk', auth: 'user', ok: 204, params: ['id'] },
  ...VmAction.options.map((action): Op => ({
    method: 'post', path: `/api/vms/{id}/${action}`, summary: `${action} a VM`, auth: 'user', ok: 200, params: ['id'], answer: Vm,
  })),
  { method: 'get', path: '/api/vms/{id}/console', summary: 'WebSocket: the serial console (text, unframed)', auth: 'user', ok: 101, params: ['id'] },
  { method: 'get', path: '/api/vms/{id}/vnc', summary: 'WebSocket: the graphical console (RFB, for noVNC)', auth: 'user', ok: 101, params: ['id'] },
  { method: 'get', path: '/api/templates', summary: 'Templates across every host', auth: 'user', ok: 200,
    answer: z.object({ templates: z.array(ClusterTemplate) }) },
  { method: 'post', path: '/api/templates', summary: 'Import from a URL with its sha256 (JSON), or upload a file (any other type; ?name=&sha256=&host=)',
    auth: 'admin', body: TemplateImport, ok: 200 },
  { method: 'delete', path: '/api/templates/{name}', summary: 'Delete a template from every host', auth: 'admin', ok: 200, params: ['name'] },
  { method: 'get', path: '/api/events', summary: 'The event log, newest first', auth: 'admin', ok: 200, answer: z.object({ events: z.array(Event) }),
    query: { source: 'component or "agent"', level: 'lowest level', hostId: 'one host', vmId: 'one VM', after: 'ids above this', limit: '1-1000 (100)' } },
  { method: 'get', path: '/api/events/stream', summary: 'Server-sent events: each new event as it is recorded', auth: 'admin', ok: 200 },
  { method: 'post', path: '/api/events', summary: 'An agent forwards its log records (bearer: its agent key)', auth: 'agent', body: AgentEvents, ok: 202 },
  { method: 'get', path: '/api/openapi.json', summary: 'This document', auth: 'none', ok: 200 },
];

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): unknown {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

let cached: unknown;

/** The OpenAPI 3.1 document of the controller's API. */
export function openApiDocument(): unknown {
  if (cached) return cached;
  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of OPS) {
    const security = op.auth === 'none' ? [] : op.auth === 'agent' ? [{ agentKey: [] }] : [{ bearer: [] }, { session: [] }];
    const parameters = [
      ...(op.params ?? []).map((name) => ({ name, in: 'path', required: true, schema: { type: 'string' } })),
      ...Object.entries(op.query ?? {}).map(([name, description]) => ({ name, in: 'query', required: false, description, schema: { type: 'string' } })),
      ...Object.entries(op.headers ?? {}).map(([name, description]) => ({ name, in: 'header', required: false, description, schema: { type: 'string' } })),
    ];
    const errorResponse = { description: 'error', content: { 'application/json': { schema: jsonSchema(ErrorBody, 'output') } } };
    (paths[op.path] ??= {})[op.method] = {
      summary: op.summary,
      ...(op.auth === 'admin' ? { description: 'Admins only.' } : {}),
      security,
      ...(parameters.length ? { parameters } : {}),
      ...(op.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(op.body, 'input') } } } } : {}),
      responses: {
        [String(op.ok)]: { description: 'success', ...(op.answer ? { content: { 'application/json': { schema: jsonSchema(op.answer, 'output') } } } : {}) },
        '4XX': errorResponse,
        '5XX': errorResponse,
      },
    };
  }
  cached = {
    openapi: '3.1.0',
    info: { title: 'SkyHost controller API', version: VERSION, description: 'Errors are { "error": { "code", "message", "details"? } }. See docs/api.md.' },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'an API token (DATA/secrets/admin-token, or one made with POST /api/tokens)' },
        session: { type: 'apiKey', in: 'cookie', name: 'skyhost_session', description: 'browser session; state changes need X-CSRF-Token' },
        agentKey: { type: 'http', scheme: 'bearer', description: 'the agent key a host enrolled with' },
      },
    },
    paths,
  };
  return cached;
}
