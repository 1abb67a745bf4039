// The JSON API of the event log: a query, a live stream (server-sent events), and agents forwarding
// their own log records.
import { z } from 'zod';
import { agentHostId, type ApiRouter } from '../api/route.ts';
import type { ControllerServices } from '../services.ts';
import { Event, EventQuery } from './events.ts';

export const AgentEvents = z.strictObject({
  events: z.array(z.object({
    time: z.string().max(40).optional(),
    level: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
    component: z.string().max(64).optional(),
    msg: z.string().max(2000),
    vmId: z.string().max(64).optional(),
  }).loose()).max(500),
});

const LEVELS = ['debug', 'info', 'warn', 'error'];

export function eventRoutes(api: ApiRouter, services: ControllerServices): void {
  const { events } = services;

  api.route({
    method: 'get', path: '/api/events', summary: 'The event log, newest first', auth: 'admin', query: EventQuery,
    responses: { 200: z.object({ events: z.array(Event) }) },
  }, (_req, res, { query }) => {
    res.json({ events: events.list(query) });
  });
  api.route({
    method: 'get', path: '/api/events/stream', summary: 'Server-sent events: each new event as it is recorded', auth: 'admin', query: EventQuery,
    responses: { 200: 'text/event-stream: one `data:` line of JSON per event' },
  }, (req, res, { query: q }) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write(': live events\n\n');
    const send = (e: Event) => {
      if (q.source && e.source !== q.source) return;
      if (q.hostId && e.hostId !== q.hostId) return;
      if (q.level && LEVELS.indexOf(e.level) < LEVELS.indexOf(q.level)) return;
      res.write(`id: ${e.id}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    events.on('event', send);
    const ping = setInterval(() => res.write(': ping\n\n'), 25_000);
    req.on('close', () => {
      clearInterval(ping);
      events.off('event', send);
    });
  });
  api.route({
    method: 'post', path: '/api/events', summary: 'An agent forwards its log records (bearer: its agent key)', auth: 'agent', body: AgentEvents,
    responses: { 202: z.object({ accepted: z.number().int() }) },
  }, (_req, res, { body }) => {
    const hostId = agentHostId(res);
    for (const e of body.events) {
      events.record({ level: e.level, source: 'agent', hostId, vmId: e.vmId, msg: e.msg, time: e.time,
        data: e.component ? { component: e.component } : undefined });
    }
    res.status(202).json({ accepted: body.events.length });
  });
}
