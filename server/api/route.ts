// One call registers a JSON route and records its OpenAPI operation, so the router and the published
// document (server/api/openapi.ts) cannot list different operations. Each component has a routes
// module (server/vms/routes.ts, ...) that calls `api.route(...)` for its routes.
//
//   api.route({ method: 'post', path: '/api/tokens', summary: 'Make an API token', auth: 'user',
//     body: TokenCreate, responses: { 201: ApiTokenWithSecret } }, (req, res, { body }) => { ... });
//
// `auth` is enforced here (requireUser / requireAdmin), `body` and `query` are checked here (a 422
// naming the field) and handed to the handler parsed; what is described is what is enforced.
import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { z } from 'zod';
import { NotFound, Unauthorized, fromZod } from '../../base/errors.ts';
import { currentUser, requireAdmin, requireUser } from '../users/auth.ts';
import type { User } from '../users/users.ts';
import { openApiDocument } from './openapi.ts';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';

/** Who may call: anyone, a signed-in user (session or API token), an admin, or an enrolled agent (its agent key as bearer). */
export type Auth = 'none' | 'user' | 'admin' | 'agent';

export interface Operation<B extends z.ZodType | undefined = z.ZodType | undefined, Q extends z.ZodType | undefined = z.ZodType | undefined> {
  method: Method;
  /** Express path (`/api/vms/:id`); the document shows it as `/api/vms/{id}`. */
  path: string;
  summary: string;
  auth: Auth;
  /** Let a user who must still change a one-time password through (`auth: 'user'` only). */
  allowPasswordChange?: boolean;
  /** The JSON body: checked before the handler runs, which gets it parsed. */
  body?: B;
  /** The route also takes a raw file as the body (any type but JSON); `body` then applies to JSON requests only. */
  upload?: string;
  /** The query string (a zod object): checked, parsed, described parameter by parameter. */
  query?: Q;
  /** A path parameter's schema when it is more than a string (e.g. an enum); checked by the handler. */
  params?: Record<string, z.ZodType>;
  /** Request headers the route reads, with what they mean. */
  headers?: Record<string, string>;
  /** Status -> the answer's schema, or a description for an answer without a JSON body. */
  responses: Record<number, z.ZodType | string>;
}

type Parsed<S> = S extends z.ZodType ? z.output<S> : undefined;
export type Handler<B, Q> = (req: Request, res: Response, input: { body: Parsed<B>; query: Parsed<Q> }) => unknown;

export interface ApiRouterOptions {
  /** The enrolled host an agent key belongs to (for `auth: 'agent'`). */
  hostOfAgentKey?: (key: string) => { id: string } | undefined;
}

/** A Router plus the operations registered on it. */
export class ApiRouter {
  readonly router: Router = Router();
  readonly operations: Operation[] = [];
  readonly #opts: ApiRouterOptions;
  #document: unknown;

  constructor(opts: ApiRouterOptions = {}) {
    this.#opts = opts;
  }

  route<B extends z.ZodType | undefined = undefined, Q extends z.ZodType | undefined = undefined>(op: Operation<B, Q>, handler: Handler<B, Q>): void {
    if (this.operations.some((o) => o.method === op.method && o.path === op.path)) throw new Error(`${op.method} ${op.path} is registered twice`);
    this.operations.push(op);
    this.#document = undefined;
    const handle: RequestHandler = async (req, res) => {
      const checkBody = op.body && (!op.upload || req.is('application/json'));
      const body = checkBody ? parseBody(op.body!, req.body) : undefined;
      const query = op.query ? parseBody(op.query, req.query, 'query') : undefined;
      await handler(req, res, { body, query } as { body: Parsed<B>; query: Parsed<Q> });
    };
    this.router[op.method](op.path, this.#guard(op), handle);
  }

  #guard(op: Operation): RequestHandler {
    const opts = op.allowPasswordChange ? { allowPasswordChange: true } : {};
    if (op.auth === 'user') return requireUser(opts);
    if (op.auth === 'admin') return requireAdmin(opts);
    if (op.auth === 'none') return (_req, _res, next) => next();
    const hostOf = this.#opts.hostOfAgentKey;
    if (!hostOf) throw new Error(`${op.method} ${op.path}: auth 'agent' needs hostOfAgentKey`);
    return (req, res, next) => {
      const key = req.get('authorization')?.replace(/^Bearer /, '') ?? '';
      const host = key ? hostOf(key) : undefined;
      if (!host) return next(new Unauthorized('send the agent key of an enrolled host as Authorization: Bearer'));
      res.locals.agentHostId = host.id;
      next();
    };
  }

  /** The OpenAPI document of every operation registered so far (built once). */
  document(): unknown {
    this.#document ??= openApiDocument(this.operations);
    return this.#document;
  }
}

/** Parses `value` with `schema` or throws a 422 naming the field. */
export function parseBody<S extends z.ZodType>(schema: S, value: unknown, prefix = ''): z.output<S> {
  const r = schema.safeParse(value ?? {});
  if (!r.success) throw fromZod(r.error, prefix);
  return r.data;
}

/** The signed-in user (the route's `auth` made sure there is one). */
export function me(res: Response): User {
  const user = currentUser(res);
  if (!user) throw new Unauthorized();
  return user;
}

/** The host whose agent called (the route's `auth: 'agent'` made sure there is one). */
export function agentHostId(res: Response): string {
  const id: unknown = res.locals.agentHostId;
  if (typeof id !== 'string') throw new Unauthorized();
  return id;
}

/** A path parameter, or a 404 when it is longer than any id (never echoed into anything but the message). */
export function param(req: Request, name: string): string {
  const v = req.params[name];
  if (typeof v !== 'string' || v.length > 128) throw new NotFound(name);
  return v;
}

/** `/api/vms/:id` -> `/api/vms/{id}`. */
export function openApiPath(expressPath: string): string {
  return expressPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}
