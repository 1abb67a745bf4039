// `GET /api/openapi.json`: the operations registered with `ApiRouter.route` (route.ts), described
// from the same zod schemas the routes check with (zod 4's `z.toJSONSchema`).
import { z } from 'zod';
import { VERSION } from '../../base/version.ts';
import { openApiPath, type Operation } from './route.ts';

const ErrorBody = z.object({ error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }) });

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

const SECURITY = { none: [], user: [{ bearer: [] }, { session: [] }], admin: [{ bearer: [] }, { session: [] }], agent: [{ agentKey: [] }] };

function parameters(op: Operation): unknown[] {
  const inPath = [...op.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!);
  const query = op.query ? jsonSchema(op.query, 'input') as { properties?: Record<string, Record<string, unknown>>; required?: string[] } : {};
  return [
    ...inPath.map((name) => ({ name, in: 'path', required: true, schema: op.params?.[name] ? jsonSchema(op.params[name], 'input') : { type: 'string' } })),
    ...Object.entries(query.properties ?? {}).map(([name, { description, ...schema }]) => ({
      name, in: 'query', required: query.required?.includes(name) ?? false, ...(description ? { description } : {}), schema,
    })),
    ...Object.entries(op.headers ?? {}).map(([name, description]) => ({ name, in: 'header', required: false, description, schema: { type: 'string' } })),
  ];
}

function requestBody(op: Operation): object {
  const content: Record<string, unknown> = {};
  if (op.body) content['application/json'] = { schema: jsonSchema(op.body, 'input') };
  if (op.upload) content['application/octet-stream'] = { schema: { type: 'string', format: 'binary', description: op.upload } };
  return Object.keys(content).length ? { requestBody: { required: true, content } } : {};
}

/** The OpenAPI 3.1 document of `operations`. */
export function openApiDocument(operations: readonly Operation[]): unknown {
  const errorResponse = { description: 'error', content: { 'application/json': { schema: jsonSchema(ErrorBody, 'output') } } };
  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of operations) {
    const params = parameters(op);
    const responses: Record<string, unknown> = {};
    for (const [status, answer] of Object.entries(op.responses)) {
      responses[status] = typeof answer === 'string'
        ? { description: answer }
        : { description: 'success', content: { 'application/json': { schema: jsonSchema(answer, 'output') } } };
    }
    (paths[openApiPath(op.path)] ??= {})[op.method] = {
      summary: op.summary,
      ...(op.auth === 'admin' ? { description: 'Admins only.' } : {}),
      security: SECURITY[op.auth],
      ...(params.length ? { parameters: params } : {}),
      ...requestBody(op),
      responses: { ...responses, '4XX': errorResponse, '5XX': errorResponse },
    };
  }
  return {
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
}
