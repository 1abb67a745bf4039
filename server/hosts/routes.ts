// The JSON API of hosts: enrollment, the host list, approve/drain/wake/forget, replacement requests
// (a known host id enrolling with a new key and no token, for the admin to approve or reject), and join tokens.
import { z } from 'zod';
import { EnrollResponse } from '../../wire/api.ts';
import { Conflict } from '../../base/errors.ts';
import { me, param, type ApiRouter } from '../api/route.ts';
import type { ControllerServices } from '../services.ts';
import { hostNames, HostRename } from './names.ts';
import { ControllerEnrollRequest, Host, HostReplacement } from './registry.ts';

/** A host with what the pages call it: `label` (its display name or hostname, told apart from namesakes by a short id). */
export const NamedHost = Host.extend({ displayName: z.string().optional(), label: z.string() });

export const WakeRequest = z.strictObject({ mac: z.string().max(32).optional() });
export const DrainRequest = z.strictObject({
  shutdownVmsAt: z.string().max(40).nullable().optional().describe('shut the host\'s running VMs down at this time (ISO 8601); null: never'),
});
export const WakeSchedule = z.strictObject({
  schedule: z.string().max(100).nullable().describe('when the room is woken, e.g. "weekdays 07:30", "daily 07:30", "mon,wed,fri 07:45"; null: never'),
});
const WakeScheduleAnswer = z.object({ schedule: z.string().nullable(), cron: z.string().optional(), nextRun: z.string().optional() });
const WakeOutcome = z.object({ id: z.string(), hostname: z.string(), mac: z.string().optional(), address: z.string().optional(), reason: z.string().optional() });
export const JoinTokenCreate = z.strictObject({
  ttlMinutes: z.number().int().min(1).max(30 * 24 * 60).optional(),
  label: z.string().max(100).optional(),
  uses: z.number().int().min(1).max(200).optional().describe('how many different hosts may join with it (default 1; a USB stick for a room: one per PC)'),
});
export const JoinTokenRevoke = z.strictObject({ reason: z.string().min(1).max(200) });
const HostDelete = z.object({ force: z.string().optional().describe('true: also forget its VM records') });

export function hostRoutes(api: ApiRouter, services: ControllerServices): void {
  const { hosts, vms, joinTokens } = services;
  const names = hostNames(services);
  const named = (h: Host) => ({ ...h, ...(names.displayName(h.id) ? { displayName: names.displayName(h.id) } : {}), label: names.label(h.id) });

  api.route({
    method: 'post', path: '/api/enroll', summary: 'An agent joins: a valid join token makes it ready, none leaves it pending', auth: 'none',
    body: ControllerEnrollRequest, responses: { 200: EnrollResponse },
  }, (req, res) => {
    res.json(hosts.enroll(req.body, req.ip)); // the registry checks the request itself (it is also called in-process)
  });
  api.route({
    method: 'get', path: '/api/hosts', summary: 'Hosts with state, capacity, usage, templates, last seen', auth: 'user',
    responses: { 200: z.object({ hosts: z.array(NamedHost) }) },
  }, (_req, res) => {
    res.json({ hosts: hosts.list().map(named) });
  });
  api.route({ method: 'get', path: '/api/hosts/:id', summary: 'One host', auth: 'user', responses: { 200: NamedHost } }, (req, res) => {
    res.json(named(hosts.get(param(req, 'id'))));
  });
  api.route({
    method: 'put', path: '/api/hosts/:id/name', summary: 'Give a host the name the pages show (null: its hostname again)', auth: 'admin',
    body: HostRename, responses: { 200: NamedHost },
  }, (req, res, { body }) => {
    const id = param(req, 'id');
    const before = names.label(id);
    const given = names.rename(id, body.name);
    services.events.record({ source: 'hosts', hostId: id, msg: `host ${before} renamed ${given ? `"${given}"` : `back to its hostname`} by ${me(res).name}` });
    res.json(named(hosts.get(id)));
  });
  api.route({ method: 'post', path: '/api/hosts/:id/approve', summary: 'Approve a pending host', auth: 'admin', responses: { 200: Host } }, (req, res) => {
    res.json(hosts.approve(param(req, 'id')));
  });
  api.route({
    method: 'post', path: '/api/hosts/:id/drain', summary: 'Take no new VMs on this host (and shut its VMs down at shutdownVmsAt, if given)', auth: 'admin',
    body: DrainRequest, responses: { 200: Host },
  }, (req, res, { body }) => {
    res.json(hosts.drain(param(req, 'id'), body.shutdownVmsAt));
  });
  api.route({ method: 'post', path: '/api/hosts/:id/undrain', summary: 'Put a draining host back in service', auth: 'admin', responses: { 200: Host } }, (req, res) => {
    res.json(hosts.undrain(param(req, 'id')));
  });
  api.route({
    method: 'post', path: '/api/hosts/:id/wake', summary: 'Send Wake-on-LAN to the host (its MAC, or the one given, remembered)', auth: 'admin',
    body: WakeRequest, responses: { 200: z.object({ host: Host, sent: z.boolean(), mac: z.string(), address: z.string(), port: z.number() }) },
  }, async (req, res, { body }) => {
    res.json(await hosts.wake(param(req, 'id'), body.mac));
  });
  api.route({
    method: 'post', path: '/api/hosts/wake-all', summary: 'Send Wake-on-LAN to every host asleep or down whose MAC is known', auth: 'admin',
    responses: { 200: z.object({ woken: z.array(WakeOutcome), skipped: z.array(WakeOutcome) }) },
  }, async (_req, res) => {
    res.json(await services.room.wakeAll(me(res).name));
  });
  api.route({
    method: 'post', path: '/api/hosts/:id/sleep', summary: 'Put a host to sleep: asleep (no alarm), and its agent switches the PC off', auth: 'admin',
    responses: { 200: z.object({ host: Host, poweredOff: z.boolean(), message: z.string() }) },
  }, async (req, res) => {
    res.json(await hosts.sleep(param(req, 'id'), me(res).name));
  });
  api.route({
    method: 'post', path: '/api/hosts/sleep-all', summary: 'Put to sleep every host that is up and runs no VM (the controller\'s own machine stays on)', auth: 'admin',
    responses: { 200: z.object({ asleep: z.array(WakeOutcome), skipped: z.array(WakeOutcome) }) },
  }, async (_req, res) => {
    res.json(await services.room.sleepAll(me(res).name));
  });
  api.route({ method: 'get', path: '/api/sleep-schedule', summary: 'When the room is put to sleep (hosts that run no VM)', auth: 'admin',
    responses: { 200: WakeScheduleAnswer } }, (_req, res) => {
    res.json(services.room.schedule('sleep'));
  });
  api.route({
    method: 'put', path: '/api/sleep-schedule', summary: 'Set or remove when the room is put to sleep, e.g. "weekdays 18:00"', auth: 'admin',
    body: WakeSchedule, responses: { 200: WakeScheduleAnswer },
  }, (_req, res, { body }) => {
    res.json(services.room.setSchedule(body.schedule, me(res).name, 'sleep'));
  });
  api.route({ method: 'get', path: '/api/wake-schedule', summary: 'When the room is woken (Wake-on-LAN to every sleeping host)', auth: 'admin',
    responses: { 200: WakeScheduleAnswer } }, (_req, res) => {
    res.json(services.room.schedule());
  });
  api.route({
    method: 'put', path: '/api/wake-schedule', summary: 'Set or remove when the room is woken, e.g. "weekdays 07:30"', auth: 'admin',
    body: WakeSchedule, responses: { 200: WakeScheduleAnswer },
  }, (_req, res, { body }) => {
    res.json(services.room.setSchedule(body.schedule, me(res).name));
  });
  api.route({
    method: 'delete', path: '/api/hosts/:id', summary: 'Forget a host (409 while it has VM records, unless ?force=true)', auth: 'admin',
    query: HostDelete, responses: { 204: 'forgotten' },
  }, (req, res, { query }) => {
    const id = param(req, 'id');
    hosts.require(id);
    const held = vms.records(services.system, { host: id }).length;
    if (held > 0 && query.force !== 'true') {
      throw new Conflict(`host ${id} still has ${held} VM record(s): drain it and delete them, or add ?force=true to forget them`);
    }
    hosts.remove(id);
    res.status(204).end();
  });

  // ---- replacement requests (admin) ----
  api.route({
    method: 'get', path: '/api/host-replacements', summary: 'Refused enrollments of known hosts with a new key: the host now and as asked, side by side',
    auth: 'admin', responses: { 200: z.object({ replacements: z.array(HostReplacement) }) },
  }, (_req, res) => {
    res.json({ replacements: hosts.replacements() });
  });
  api.route({
    method: 'post', path: '/api/host-replacements/:id/approve', summary: 'Replace: the host takes the requested agent key and URL (its VMs stay)',
    auth: 'admin', responses: { 200: Host },
  }, (req, res) => {
    res.json(hosts.approveReplacement(param(req, 'id'), me(res).name));
  });
  api.route({
    method: 'post', path: '/api/host-replacements/:id/reject', summary: 'Forget a replacement request; the host stays as it is', auth: 'admin',
    responses: { 204: 'forgotten' },
  }, (req, res) => {
    hosts.rejectReplacement(param(req, 'id'), me(res).name);
    res.status(204).end();
  });

  // ---- join tokens (admin) ----
  api.route({
    method: 'get', path: '/api/join-tokens', summary: 'The cluster join token (and its join string) and the counted tokens with their uses left', auth: 'admin',
    responses: { 200: 'clusterToken, clusterJoinString (with the HTTPS addresses and the certificate fingerprint), fingerprint, tokens' },
  }, (_req, res) => {
    const clusterToken = joinTokens.clusterToken();
    const clusterJoinString = joinTokens.joinString(clusterToken);
    res.json({ clusterToken, ...(clusterJoinString ? { clusterJoinString } : {}), ...(joinTokens.fingerprint ? { fingerprint: joinTokens.fingerprint } : {}), tokens: joinTokens.list() });
  });
  api.route({
    method: 'post', path: '/api/join-tokens', summary: 'Make a join token for one host, or for `uses` hosts (a USB stick for a room)', auth: 'admin', body: JoinTokenCreate,
    responses: { 201: 'the token (shown once), its id and its uses' },
  }, (_req, res, { body }) => {
    res.status(201).json(joinTokens.issue({
      ...(body.ttlMinutes ? { ttlMinutes: body.ttlMinutes } : {}), ...(body.label ? { label: body.label } : {}), ...(body.uses ? { uses: body.uses } : {}),
    }));
  });
  api.route({
    method: 'post', path: '/api/join-tokens/rotate', summary: 'Replace the cluster join token', auth: 'admin',
    responses: { 200: z.object({ clusterToken: z.string(), clusterJoinString: z.string().optional() }) },
  }, (_req, res) => {
    const clusterToken = joinTokens.rotateClusterToken();
    const clusterJoinString = joinTokens.joinString(clusterToken);
    res.json({ clusterToken, ...(clusterJoinString ? { clusterJoinString } : {}) });
  });
  api.route({
    method: 'post', path: '/api/join-tokens/:id/revoke', summary: 'Revoke a single-use join token', auth: 'admin', body: JoinTokenRevoke,
    responses: { 200: 'the token as it is now' },
  }, (req, res, { body }) => {
    res.json(joinTokens.revoke(param(req, 'id'), body.reason));
  });
}
