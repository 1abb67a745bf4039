// The JSON API of class sessions: start one (a VM per student, in one call), read its grid, end it now,
// and list a class's sessions. The rules (who may, what is checked) live in sessions.ts.
import { z } from 'zod';
import { VmState } from '../../wire/api.ts';
import { me, param, type ApiRouter } from '../api/route.ts';
import { SessionRequest, type SessionService } from './sessions.ts';

const SessionFailure = z.object({
  student: z.string(),
  code: z.string().describe('e.g. no_host_fits, quota_exceeded, conflict, wake_timeout (no host woke in time), session_ended (ended while waiting for a host), or the agent\'s error code'),
  message: z.string(),
  reasons: z.array(z.object({ host: z.string(), hostname: z.string(), reason: z.string(), message: z.string() })).optional()
    .describe('for no_host_fits: why the scheduler left each host out'),
});

const SessionTile = z.object({
  student: z.string(),
  displayName: z.string().optional(),
  vm: z.object({
    id: z.string(), name: z.string().describe('e.g. 7b-anna'), state: VmState, host: z.string(), hostname: z.string().optional(),
    error: z.string().optional(), progress: z.string().optional(), consoleUrl: z.string().describe('the VM page with its console'),
  }).optional().describe('absent when the student got no VM, or it was deleted'),
  failure: SessionFailure.optional(),
  waiting: z.object({
    student: z.string(), since: z.string(), until: z.string().describe('when the wait ends: the student then fails with wake_timeout'),
    hosts: z.array(z.string()).describe('the hosts being woken'), message: z.string().describe('e.g. "waiting for a host to wake (lab-03, lab-04)"'),
  }).optional().describe('no awake host fits this student: sleeping hosts are being woken, and the VM is made when one comes up'),
});

export const SessionView = z.object({
  id: z.string(),
  classId: z.string(),
  className: z.string(),
  teacher: z.string(),
  template: z.string(),
  vcpus: z.number(),
  memoryMiB: z.number(),
  diskGiB: z.number().optional(),
  endsAt: z.string().describe('when it ends (or ended, when ended early)'),
  keepDisks: z.boolean(),
  state: z.enum(['running', 'ending', 'ended']).describe('running, ending (VMs being shut down or deleted), ended'),
  createdAt: z.string(),
  endedAt: z.string().optional(),
  secondsLeft: z.number().describe('0 once the end time passed'),
  tiles: z.array(SessionTile).describe('one per student (a student of the class sees only their own)'),
  failures: z.array(SessionFailure).describe('students without a working VM, with the reason'),
  counts: z.record(z.string(), z.number()).describe('VMs by state; "none" a student without a VM, "waiting" one waiting for a host to wake, "deleted" a VM gone'),
});

export function sessionRoutes(api: ApiRouter, sessions: SessionService): void {
  api.route({
    method: 'post', path: '/api/classes/:id/sessions',
    summary: 'Start a class session: one VM per student, requested at once; refusals listed per student (teacher of the class or admin; 409 if one runs)',
    auth: 'user', body: SessionRequest, responses: { 201: SessionView },
  }, async (req, res, { body }) => {
    const view = await sessions.start(me(res), param(req, 'id'), body);
    res.status(201).location(`/api/sessions/${view.id}`).json(view);
  });
  api.route({
    method: 'get', path: '/api/classes/:id/sessions', summary: 'The sessions of a class, newest first (its teachers and students; a student sees their own tile)',
    auth: 'user', responses: { 200: z.object({ sessions: z.array(SessionView) }) },
  }, (req, res) => {
    res.json({ sessions: sessions.list(me(res), param(req, 'id')) });
  });
  api.route({
    method: 'get', path: '/api/sessions/:id', summary: 'A class session with its grid: a tile per student (state, time left, console)',
    auth: 'user', responses: { 200: SessionView },
  }, (req, res) => {
    res.json(sessions.view(me(res), param(req, 'id')));
  });
  api.route({
    method: 'post', path: '/api/sessions/:id/end', summary: 'End a class session now: its VMs are shut down (disks kept) or deleted, as chosen at the start',
    auth: 'user', responses: { 202: SessionView },
  }, (req, res) => {
    res.status(202).json(sessions.end(me(res), param(req, 'id')));
  });
}
