// The web installer's pages on the shared view helper (base/views.ts): each step is one template of
// views/setup/; a whole page is the layout around it, an htmx request gets the step alone.
import type { Request, Response } from 'express';
import { Views, htmlAnswer } from '../../base/views.ts';

/** Every template of views/setup/ is also a partial under its own name (`{{> field ...}}`). */
const views = new Views({ partials: 'views/setup/', layout: 'views/setup/layout.hbs' });

export interface SetupView {
  view: string;
  title: string;
  data: Record<string, unknown>;
  status?: number;
}

/** Renders a step: the whole page, or for htmx just the step (both vary on HX-Request). */
export function renderStep(req: Request, res: Response, v: SetupView): void {
  const key = `views/setup/${v.view}.hbs`;
  const answer = htmlAnswer(req, res, { status: v.status, hasFragment: true });
  res.send(answer === 'fragment' ? views.render(key, v.data) : views.page(key, v.data, { title: v.title }));
}
