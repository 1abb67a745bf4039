// Server-rendered HTML with htmx, for the controller's pages and the web installer: Handlebars
// templates read through the asset table (so they work inside the single executable), compiled once.
// One URL answers both ways from the same templates:
//
//   plain request, or a boosted link (HX-Boosted)  ─▶ the layout around the page   (`views.page`)
//   htmx request that swaps part of the page       ─▶ the fragment alone           (`views.render`)
//
// and every answer says `Vary: HX-Request` (`htmlAnswer`), so no cache mixes the two up.
import Handlebars from 'handlebars';
import type { Request, Response } from 'express';
import { assetKeys, readTextAsset } from './assets.ts';

/**
 * Whether to answer with the fragment alone: an htmx request that swaps part of the page. A boosted
 * link or form (HX-Boosted) replaces the whole body, so it gets the whole page.
 */
export function wantsFragment(req: Request): boolean {
  return req.get('HX-Request') === 'true' && req.get('HX-Boosted') !== 'true';
}

/**
 * Sets what every HTML answer carries (its status, `text/html`, `Cache-Control: no-store`,
 * `Vary: HX-Request`) and says which answer to send: the fragment when there is one and the request
 * wants it, else the whole page.
 */
export function htmlAnswer(req: Request, res: Response, opts: { status?: number; hasFragment: boolean }): 'fragment' | 'page' {
  res.status(opts.status ?? 200).type('html');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Vary', 'HX-Request');
  return opts.hasFragment && wantsFragment(req) ? 'fragment' : 'page';
}

export interface ViewsOptions {
  /** An asset folder whose every template is also a partial under its base name (`{{> vm-list}}`). */
  partials: string;
  /** The layout's asset key; it shows the page as `{{{body}}}`. */
  layout: string;
  /** Template helpers besides the common ones (eq, not, and, or, gt). */
  helpers?: Record<string, Handlebars.HelperDelegate>;
}

/** Partials given at render time, by name: already rendered HTML that `{{> name}}` inserts as it is. */
export type RenderedPartials = Record<string, string>;

/** One set of templates: a layout, pages and partials, with their helpers. */
export class Views {
  readonly #hbs = Handlebars.create();
  readonly #opts: ViewsOptions;
  readonly #compiled = new Map<string, Handlebars.TemplateDelegate>();
  #partialsLoaded = false;

  constructor(opts: ViewsOptions) {
    this.#opts = opts;
    this.#hbs.registerHelper({ ...COMMON_HELPERS, ...opts.helpers });
  }

  /** Renders the template `key` (e.g. `views/partials/vm-list.hbs`) with `context`. */
  render(key: string, context: object, partials?: RenderedPartials): string {
    return this.#template(key)(context, partials ? { partials: asPartials(partials) } : undefined);
  }

  /** The whole page: the layout (with `layoutContext` and `body`) around the template `key`. */
  page(key: string, context: object, layoutContext: object, partials?: RenderedPartials): string {
    return this.render(this.#opts.layout, { ...layoutContext, body: this.render(key, context, partials) });
  }

  /** Compiles every template under `folders` now, so a broken one fails at start; returns how many. */
  precompile(folders: string[]): number {
    let n = 0;
    for (const key of assetKeys()) {
      if (key.endsWith('.hbs') && folders.some((f) => key.startsWith(f))) {
        this.#template(key);
        n++;
      }
    }
    return n;
  }

  #template(key: string): Handlebars.TemplateDelegate {
    let t = this.#compiled.get(key);
    if (!t) {
      this.#loadPartials();
      const source = readTextAsset(key);
      if (source === undefined) throw new Error(`view ${key} is missing`);
      t = this.#hbs.compile(source, COMPILE);
      this.#compiled.set(key, t);
    }
    return t;
  }

  #loadPartials(): void {
    if (this.#partialsLoaded) return;
    this.#partialsLoaded = true;
    const folder = this.#opts.partials;
    for (const key of assetKeys()) {
      const name = key.startsWith(folder) ? /^([a-z0-9-]+)\.hbs$/.exec(key.slice(folder.length))?.[1] : undefined;
      if (!name) continue;
      const t = this.#hbs.compile(readTextAsset(key) ?? '', COMPILE);
      this.#compiled.set(key, t);
      this.#hbs.registerPartial(name, t);
    }
  }
}

const COMPILE = { strict: false, preventIndent: true };

function asPartials(rendered: RenderedPartials): Record<string, Handlebars.Template> {
  const out: Record<string, Handlebars.Template> = {};
  for (const [name, html] of Object.entries(rendered)) out[name] = () => html;
  return out;
}

const COMMON_HELPERS: Record<string, Handlebars.HelperDelegate> = {
  eq: (a: unknown, b: unknown) => a === b,
  not: (a: unknown) => !a,
  // The last argument of a helper is Handlebars' options object.
  or: (...args: unknown[]) => args.slice(0, -1).some(Boolean),
  and: (...args: unknown[]) => args.slice(0, -1).every(Boolean),
  gt: (a: unknown, b: unknown) => Number(a) > Number(b),
};
