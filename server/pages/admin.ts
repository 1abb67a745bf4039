// The admin's pages: hosts (approve, drain, undrain, wake, remove, "Add a host", replacement requests
// and strangers), the event log with filters and a live tail (users: pages/users.ts).
import express, { type Request, type Response, type Router } from 'express';
import { InvalidField, NotFound, fromZod, toSkyError } from '../../base/errors.ts';
import { LEVELS } from '../../base/log.ts';
import type { ControllerServices } from '../services.ts';
import { checkControllerUrl, controllerAddressOf, handOutBase, installCommand, isLoopbackUrl, loopbackNotice } from '../install.ts';
import { publicKeyPin, showFingerprint } from '../../base/tls.ts';
import { requireAdmin, requireUser } from '../users/auth.ts';
import type { User } from '../users/users.ts';
import { hostNames } from '../hosts/names.ts';
import { eventRow, hostRow } from './dashboard.ts';
import { hostSparklines } from './hosts.ts';
import { field, me, redirect } from './forms.ts';
import { render } from './render.ts';

const HOST_ACTIONS = ['approve', 'drain', 'undrain', 'wake', 'sleep', 'shutdown-vms-at', 'remove'] as const;

export function adminPages(services: ControllerServices): Router {
  const r = express.Router();

  // ---- hosts ----
  // "Add a host": the page itself carries no token. A POST makes the install command: by default with
  // a counted token (one day; one PC unless the admin asks for more, e.g. a USB stick for a room);
  // the reusable cluster token only when the admin picks it.
  const hostsPage = (req: Request, res: Response, install: object = {}, partial = 'host-list', extra: { status?: number; notes?: object } = {}) => {
    render(req, res, {
      page: 'hosts', partial, title: 'Hosts', status: extra.status ?? 200,
      data: {
        spark: hostSparklines(services),
        hosts: services.hosts.list().map((h) => ({ ...hostRow(h, hostNames(services).labels(), hostNames(services).displayName(h.id)), ...powerOf(h) })),
        wake: services.room.schedule(), sleep: services.room.schedule('sleep'),
        install: {
          baseUrl: controllerBase(req, services), agentUrl: httpsBase(controllerBase(req, services), services) ?? controllerBase(req, services),
          loopback: loopbackNotice(requestBase(req), controllerBase(req, services)), uses: 1, tokens: services.joinTokens.list().slice(0, 10), ...install },
        ...hostRequests(services, me(res)), ...extra.notes,
      },
    });
  };
  r.get('/hosts', requireAdmin(), (req, res) => hostsPage(req, res));
  r.get('/hosts/replacements', requireAdmin(), (req, res) => hostsPage(req, res, {}, 'host-replacements'));
  r.get('/hosts/strangers', requireAdmin(), (req, res) => hostsPage(req, res, {}, 'host-strangers'));

  // Replacement requests: a known host id with a new agent key and no token, approved or rejected by an admin.
  r.post('/hosts/replacements/:id/:action', requireAdmin(), (req, res) => {
    const id = String(req.params.id);
    const action = String(req.params.action);
    const asked = services.hosts.replacements().find((x) => x.id === id);
    if (action === 'approve') services.hosts.approveReplacement(id, me(res).name);
    else if (action === 'reject') services.hosts.rejectReplacement(id, me(res).name);
    else throw new NotFound(`action "${action.slice(0, 32)}"`);
    const what = `${asked?.current.hostname ?? id}: ${action === 'approve' ? 'the host now uses the new agent key and URL' : 'the request was forgotten, the host is unchanged'}`;
    services.events.record({ source: 'pages', msg: `replacement request ${id} for host ${asked?.hostId ?? '?'}: ${action} by ${me(res).name}`, ...(asked ? { hostId: asked.hostId } : {}) });
    hostsPage(req, res, {}, 'host-replacements', { notes: { replacementNotice: `${action === 'approve' ? 'Replaced' : 'Rejected'} ${what}.` } });
  });

  // Strangers: an admin gives one an owner (and a name), which makes it a VM record of that user.
  r.post('/hosts/:id/strangers/:vmId/adopt', requireAdmin(), (req, res) => {
    const hostId = String(req.params.id);
    const vmId = String(req.params.vmId);
    const owner = field(req, 'owner', 64);
    const name = field(req, 'name', 63);
    try {
      if (!owner) throw new InvalidField('owner', 'choose the user the VM becomes');
      const vm = services.vms.adopt(me(res), hostId, vmId, { owner, ...(name ? { name } : {}) });
      services.events.record({ source: 'pages', msg: `VM ${vm.name} (${vmId}) on host ${hostId} adopted by ${me(res).name} for ${owner}`, hostId });
      hostsPage(req, res, {}, 'host-strangers', { notes: { strangerNotice: `VM ${vm.name} now belongs to ${owner}.` } });
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500) throw err;
      hostsPage(req, res, {}, 'host-strangers', { status: sky.status, notes: { strangerError: sky.message } });
    }
  });

  r.post('/hosts/install', requireAdmin(), (req, res) => {
    const kind = field(req, 'kind') === 'cluster' ? 'cluster' : 'single-use';
    const label = field(req, 'label', 100);
    const usesText = field(req, 'uses', 10);
    const uses = usesText === '' ? 1 : /^\d+$/.test(usesText) ? Number(usesText) : Number.NaN; // NaN: refused below, naming the field
    const base = controllerBase(req, services);
    let made: { token: string; id?: string; expiresAt?: string; uses?: number };
    if (kind === 'cluster') {
      made = { token: services.joinTokens.clusterToken() };
    } else {
      try {
        made = services.joinTokens.issue({ label, uses });
      } catch (err) {
        const sky = toSkyError(err);
        if (sky.status >= 500) throw err;
        return hostsPage(req, res, { label, uses: usesText, error: sky.message }, 'host-install', { status: sky.status });
      }
    }
    res.setHeader('Cache-Control', 'no-store'); // the answer holds a join token
    services.events.record({
      source: 'pages',
      msg: kind === 'cluster' ? `the cluster join token was shown to ${me(res).name}`
        : `join token for ${uses} PC(s) made by ${me(res).name}${label ? ` for "${label}"` : ''}`,
    });
    hostsPage(req, res, {
      made: {
        cluster: kind === 'cluster', label, expiresAt: made.expiresAt, token: made.token, id: made.id, uses: made.uses, manyUses: (made.uses ?? 1) > 1,
        // Over HTTPS with the key pinned; the USB installer gets the join string (the controller's addresses and fingerprint).
        command: installCommand({ base, token: made.token, httpsBase: httpsBase(base, services), pinnedPubkey: publicKeyPin(services.tls.cert) }),
        joinString: services.joinTokens.joinString(made.token),
        fingerprint: showFingerprint(services.tls.fingerprint),
        // `skyhost setup` listens on 127.0.0.1: the link opens it on the teacher's own PC, prefilled.
        setupUrl: `http://127.0.0.1:8090/?controllerUrl=${encodeURIComponent(httpsBase(base, services) ?? base)}&joinToken=${encodeURIComponent(services.joinTokens.joinString(made.token) ?? made.token)}`,
      },
    }, 'host-install');
  });

  r.post('/hosts/join-token/rotate', requireAdmin(), (req, res) => {
    services.joinTokens.rotateClusterToken();
    services.events.record({ source: 'pages', msg: `the cluster join token was rotated by ${me(res).name}` });
    hostsPage(req, res, { notice: 'The cluster join token was replaced: the old one is refused from now on. Hosts that already joined stay.' }, 'host-install');
  });

  // Rename: the name the pages show for a host (empty: its hostname again).
  r.post('/hosts/:id/name', requireAdmin(), (req, res) => {
    const id = String(req.params.id);
    const names = hostNames(services);
    const before = names.label(id);
    const given = names.rename(id, field(req, 'name', 200));
    services.events.record({ source: 'pages', msg: `host ${before} renamed ${given ? `"${given}"` : 'back to its hostname'} by ${me(res).name}`, hostId: id });
    redirect(req, res, '/hosts', { swap: true });
  });

  // A room that sleeps: wake every sleeping host, and the schedule that wakes the room.
  r.post('/hosts/wake-all', requireAdmin(), async (req, res) => {
    const { woken, skipped } = await services.room.wakeAll(me(res).name);
    const notice = woken.length ? `Wake-on-LAN sent to ${woken.map((w) => w.hostname).join(', ')}.` : 'No host is asleep with a known MAC address: nothing to wake.';
    const noMac = skipped.filter((s) => /MAC/.test(s.reason ?? '')).map((s) => s.hostname);
    hostsPage(req, res, {}, 'host-wake', { notes: { roomNotice: noMac.length ? `${notice} MAC unknown: ${noMac.join(', ')}.` : notice } });
  });
  r.post('/hosts/sleep-all', requireAdmin(), async (req, res) => {
    const { asleep, skipped } = await services.room.sleepAll(me(res).name);
    const notice = `${asleep.length ? `Put to sleep: ${asleep.map((a) => a.hostname).join(', ')}.` : 'No host was put to sleep.'}` +
      `${skipped.length ? ` Left on: ${skipped.map((s) => `${s.hostname} (${s.reason})`).join('; ')}.` : ''}`;
    hostsPage(req, res, {}, 'host-wake', { notes: { roomNotice: notice } });
  });
  for (const kind of ['wake', 'sleep'] as const) {
    r.post(`/hosts/${kind}-schedule`, requireAdmin(), (req, res) => {
      const text = field(req, 'schedule', 100);
      try {
        const s = services.room.setSchedule(text, me(res).name, kind);
        const notice = s.schedule ? `The room ${kind === 'wake' ? 'wakes' : 'goes to sleep'} ${s.schedule}.` : `The room is no longer ${kind === 'wake' ? 'woken' : 'put to sleep'} on a schedule.`;
        hostsPage(req, res, {}, 'host-wake', { notes: { roomNotice: notice } });
      } catch (err) {
        const sky = toSkyError(err);
        if (sky.status >= 500) throw err;
        hostsPage(req, res, {}, 'host-wake', { status: sky.status, notes: { [kind]: { ...services.room.schedule(kind), schedule: text, error: sky.message } } });
      }
    });
  }

  r.post('/hosts/:id/:action', requireAdmin(), async (req, res) => {
    const id = String(req.params.id);
    const action = HOST_ACTIONS.find((a) => a === req.params.action);
    if (!action) throw new NotFound(`action "${String(req.params.action)}"`);
    const hosts = services.hosts;
    if (action === 'approve') hosts.approve(id);
    else if (action === 'drain') hosts.drain(id);
    else if (action === 'undrain') hosts.undrain(id);
    else if (action === 'wake') await hosts.wake(id);
    else if (action === 'sleep') await hosts.sleep(id, me(res).name);
    else if (action === 'shutdown-vms-at') hosts.setShutdownVmsAt(hosts.require(id), field(req, 'at', 40) || undefined);
    else hosts.remove(id);
    services.events.record({ source: 'pages', msg: `host ${id}: ${action} by ${me(res).name}`, hostId: id });
    redirect(req, res, '/hosts', { swap: true });
  });

  // ---- templates: pages/templates.ts ----

  // ---- users: pages/users.ts ----

  // ---- events ----
  r.get('/admin/events', requireAdmin(), (req, res) => {
    const q = (k: string) => (typeof req.query[k] === 'string' ? (req.query[k] as string).slice(0, 64) : '');
    const level = (LEVELS as readonly string[]).includes(q('level')) ? q('level') as (typeof LEVELS)[number] : 'info';
    const filter = { source: q('source'), level, host: q('host') };
    const hosts = services.hosts.records();
    const labels = hostNames(services).labels();
    const events = services.events.list({
      level, limit: 100, ...(filter.source ? { source: filter.source } : {}), ...(filter.host ? { hostId: filter.host } : {}),
    }).map((e) => eventRow(e, labels));
    const query = new URLSearchParams(Object.entries(filter).filter(([, v]) => v)).toString();
    render(req, res, {
      page: 'events', partial: 'event-log', title: 'Events',
      data: {
        events, filter, query, levels: LEVELS,
        sources: eventSources(services), hostOptions: hosts.map((h) => ({ id: h.id, hostname: labels.get(h.id) ?? h.hostname })),
      },
    });
  });

  return r;
}

/** The hosts page's requests for the admin: replacement requests beside the hosts they name, and strangers with their hosts' names. */
function hostRequests(services: ControllerServices, admin: User): object {
  const records = services.hosts.records();
  const names = hostNames(services).labels();
  const enrolled = new Map(records.map((h) => [h.id, h.enrolledAt]));
  const replacements = services.hosts.replacements().map((x) => ({
    ...x, enrolledAt: enrolled.get(x.hostId), askedAgain: x.times > 1, currentAddress: addressOf(x.current.url),
  }));
  const strangers = services.vms.strangers(admin).map((s) => ({ ...s, hostname: names.get(s.host) ?? s.host }));
  return { replacements, strangers, owners: strangers.length ? services.users.list().map((u) => u.name) : [] };
}

/** The host part of a URL (`10.0.0.12` of `http://10.0.0.12:8081`). */
function addressOf(url: string): string {
  try {
    return new URL(url).hostname;
  } catch {
    return url; // stored URLs were checked at enrollment; show it as it is rather than fail the page
  }
}

/** The controller's URL as the admin's browser reached it. */
function requestBase(req: Request): string {
  return `${req.protocol}://${req.get('host') ?? 'CONTROLLER'}`;
}

/** The controller's URL for lab PCs, whatever address the browser used (server/install.ts; checked: it goes into a shell command). */
function controllerBase(req: Request, services: ControllerServices): string {
  return checkControllerUrl(handOutBase(requestBase(req), { http: controllerAddressOf(services.hosts).url, https: services.joinTokens.addresses[0] }));
}

/** The controller's HTTPS address for a new host: the page's own when it came over HTTPS, else the first one agents use. */
function httpsBase(base: string, services: ControllerServices): string | undefined {
  const https = services.joinTokens.addresses.find((a) => !isLoopbackUrl(a)) ?? services.joinTokens.addresses[0];
  return base.startsWith('https:') ? base : https;
}

/** The distinct sources in the event log (an index scan). */
function eventSources(services: ControllerServices): string[] {
  return services.store.all<{ source: string }>('SELECT DISTINCT source FROM events ORDER BY source').map((r) => r.source);
}

/** What the hosts page needs to offer Wake and the drained host's shutdown time (a datetime-local value). */
function powerOf(h: { mac?: string | undefined; shutdownVmsAt?: string | undefined }): { mac?: string; shutdownVmsLocal?: string } {
  const at = h.shutdownVmsAt ? new Date(h.shutdownVmsAt) : undefined;
  const local = at ? new Date(at.getTime() - at.getTimezoneOffset() * 60_000).toISOString().slice(0, 16) : undefined;
  return { ...(h.mac ? { mac: h.mac } : {}), ...(local ? { shutdownVmsLocal: local } : {}) };
}
