// The web installer's pages: Handlebars templates in views/setup/, read through the asset table (so
// they work inside the single executable). Each step is one template; a whole page is the layout
// around it, an htmx request (HX-Request) gets the template alone, from the same source.
import Handlebars from 'handlebars';
import type { Request, Response } from 'express';
import { assetKeys, readTextAsset } from '../../base/assets.ts';

const hbs = Handlebars.create();
hbs.registerHelper('eq', (a: unknown, b: unknown) => a === b);
hbs.registerHelper('gt', (a: unknown, b: unknown) => Number(a) > Number(b));

const compiled = new Map<string, Handlebars.TemplateDelegate>();

function template(name: string): Handlebars.TemplateDelegate {
  let t = compiled.get(name);
  if (!t) {
    if (compiled.size === 0) registerAll();
    const source = readTextAsset(`views/setup/${name}.hbs`);
    if (source === undefined) throw new Error(`view views/setup/${name}.hbs is missing`);
    t = hbs.compile(source, { strict: false, preventIndent: true });
    compiled.set(name, t);
  }
  return t;
}

/** Every template of views/setup/ is also a partial under its own name (`{{> field ...}}`). */
function registerAll(): void {
  for (const key of assetKeys()) {
    const m = /^views\/setup\/([a-z0-9-]+)\.hbs$/.exec(key);
    if (m) hbs.registerPartial(m[1]!, readTextAsset(key) ?? '');
  }
}

export interface SetupView {
  view: string;
  title: string;
  data: Record<string, unknown>;
  status?: number;
}

/** Renders a step: the whole page, or for htmx just the step (both vary on HX-Request). */
export function renderStep(req: Request, res: Response, v: SetupView): void {
  const body = template(v.view)(v.data);
  res.vary('HX-Request');
  res.status(v.status ?? 200).type('html');
  res.setHeader('Cache-Control', 'no-store');
  if (req.get('HX-Request') === 'true') {
    res.send(body);
    return;
  }
  res.send(template('layout')({ title: v.title, body }));
}
