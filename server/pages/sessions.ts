// Class sessions on the pages: the list of a user's sessions with the "Start a session" form (teachers
// and admins), and a session's grid (a tile per student: state, time left, console), polled every 3 s.
//
//   GET  /sessions            my classes' sessions + the form        (partial session-form after a POST)
//   POST /sessions            start: one VM per student              ─▶ /sessions/:id
//   GET  /sessions/:id        the grid                                (htmx poll: partial session-grid)
//   POST /sessions/:id/end    "End now"                               ─▶ the grid
import express, { type Request, type Response, type Router } from 'express';
import type { SessionView } from '../classes/sessions.ts';
import type { ControllerServices } from '../services.ts';
import { requireUser } from '../users/auth.ts';
import { field, fieldErrors, formError, me, redirect } from './forms.ts';
import { render } from './render.ts';
import { PRESETS } from './vms.ts';
import { compareCodeUnits } from '../../base/order.ts';

/** How long a session lasts, in minutes (the API also takes an exact end time). */
export const DURATIONS = [
  { value: '30', label: '30 minutes' },
  { value: '45', label: '45 minutes' },
  { value: '60', label: '1 hour' },
  { value: '90', label: '1 hour 30 minutes' },
  { value: '120', label: '2 hours' },
  { value: '180', label: '3 hours' },
  { value: '240', label: '4 hours' },
];

/** "1 h 5 min left", "12 min left", "less than a minute left". */
export function timeLeft(seconds: number): string {
  if (seconds <= 0) return 'time is up';
  if (seconds < 60) return 'less than a minute left';
  const minutes = Math.ceil(seconds / 60);
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return `${h > 0 ? `${h} h${m > 0 ? ' ' : ''}` : ''}${m > 0 ? `${m} min` : ''} left`;
}

/** API field names -> the form's, for inline messages. */
const FORM_FIELDS: Record<string, string> = { vcpus: 'size', memoryMiB: 'size', minutes: 'duration', endsAt: 'duration' };

interface SessionForm {
  values: { classId: string; template: string; size: string; duration: string; keep: string };
  errors: Record<string, string>;
  error?: string | undefined;
}

function freshForm(): SessionForm {
  return { values: { classId: '', template: '', size: 'small', duration: '45', keep: 'delete' }, errors: {} };
}

/** What the grid shows beside the API's view: words for time and counts. */
function gridData(view: SessionView, teacher: boolean) {
  const vms = view.tiles.filter((t) => t.vm).length;
  return {
    session: view,
    teacher,
    live: view.state !== 'ended',
    timeLeft: view.state === 'running' ? timeLeft(view.secondsLeft) : view.state === 'ending' ? 'ending' : 'ended',
    summary: Object.entries(view.counts).sort(([a], [b]) => compareCodeUnits(a, b)).map(([state, n]) => ({ state, n })),
    vms,
    tiles: view.tiles.map((t) => ({ ...t, name: t.displayName ?? t.student, state: t.vm?.state ?? (t.waiting ? 'waiting' : t.failure ? 'error' : 'none') })),
  };
}

export function sessionPages(services: ControllerServices): Router {
  const r = express.Router();
  const sessions = services.sessions;

  const listPage = (req: Request, res: Response, form: SessionForm, status = 200, partial = 'session-list') => {
    const user = me(res);
    const classes = sessions.classesToTeach(user);
    if (!form.values.classId && classes.length === 1) form.values.classId = classes[0]!.id;
    render(req, res, {
      page: 'sessions', partial, status, title: 'Class sessions',
      data: {
        sessions: sessions.mine(user).map((s) => ({ ...s, timeLeft: s.state === 'running' ? timeLeft(s.secondsLeft) : s.state, vms: s.tiles.filter((t) => t.vm).length })),
        classes, canStart: classes.length > 0, templates: services.templates.list(), presets: PRESETS, durations: DURATIONS, form,
      },
    });
  };

  r.get('/sessions', requireUser(), (req, res) => {
    const form = freshForm();
    // "Start a session" on a class's page comes with the class chosen.
    if (typeof req.query.class === 'string') form.values.classId = req.query.class.slice(0, 64);
    listPage(req, res, form);
  });

  r.post('/sessions', requireUser(), async (req, res) => {
    const user = me(res);
    const form = freshForm();
    form.values = {
      classId: field(req, 'classId', 64), template: field(req, 'template', 128), size: field(req, 'size', 16) || 'small',
      duration: field(req, 'duration', 8), keep: field(req, 'keep', 8) || 'delete',
    };
    const preset = PRESETS.find((p) => p.id === form.values.size);
    if (!form.values.classId) form.errors.classId = 'choose a class';
    if (!form.values.template) form.errors.template = 'choose a template';
    if (!preset) form.errors.size = 'choose small, medium or large';
    if (!DURATIONS.some((d) => d.value === form.values.duration)) form.errors.duration = 'choose one of the offered lengths';
    if (form.values.keep !== 'keep' && form.values.keep !== 'delete') form.errors.keep = 'choose what happens to the disks';
    if (Object.keys(form.errors).length > 0) return listPage(req, res, form, 422, 'session-form');
    try {
      const view = await sessions.start(user, form.values.classId, {
        template: form.values.template, vcpus: preset!.vcpus, memoryMiB: preset!.memoryMiB, minutes: Number(form.values.duration),
        keepDisks: form.values.keep === 'keep',
      });
      redirect(req, res, `/sessions/${view.id}`);
    } catch (err) {
      const sky = formError(err);
      if (!sky) throw err;
      form.errors = fieldErrors(sky, FORM_FIELDS);
      if (Object.keys(form.errors).length === 0) form.error = sky.message;
      listPage(req, res, form, sky.status === 404 ? 422 : sky.status, 'session-form');
    }
  });

  const grid = (req: Request, res: Response, id: string) => {
    const user = me(res);
    const view = sessions.view(user, id);
    const teacher = services.sessions.roster.teaches(user, view.classId);
    render(req, res, { page: 'session', partial: 'session-grid', title: `Session of ${view.className}`, data: gridData(view, teacher) });
  };

  r.get('/sessions/:id', requireUser(), (req, res) => grid(req, res, String(req.params.id)));

  r.post('/sessions/:id/end', requireUser(), (req, res) => {
    const id = String(req.params.id);
    sessions.end(me(res), id);
    redirect(req, res, `/sessions/${encodeURIComponent(id)}`, { swap: true });
  });

  return r;
}
