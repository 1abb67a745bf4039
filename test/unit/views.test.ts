// The view helper the controller's pages and the web installer share (base/views.ts), on the real
// templates of the checkout.
import { expect } from 'chai';
import type { Request, Response } from 'express';
import { htmlAnswer, Views, wantsFragment } from '../../base/views.ts';

function request(headers: Record<string, string>): Request {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { get: (name: string) => lower[name.toLowerCase()] } as unknown as Request;
}

function response(): Response & { sent: { status?: number; type?: string; headers: Record<string, string> } } {
  const sent: { status?: number; type?: string; headers: Record<string, string> } = { headers: {} };
  const res = {
    sent,
    status(code: number) { sent.status = code; return res; },
    type(t: string) { sent.type = t; return res; },
    setHeader(name: string, value: string) { sent.headers[name] = value; return res; },
  };
  return res as unknown as Response & { sent: typeof sent };
}

describe('shared views (base/views.ts)', () => {
  it('answers the fragment to an htmx swap only: a plain request and a boosted one get the whole page', () => {
    expect(wantsFragment(request({ 'HX-Request': 'true' }))).to.equal(true);
    expect(wantsFragment(request({ 'HX-Request': 'true', 'HX-Boosted': 'true' }))).to.equal(false);
    expect(wantsFragment(request({}))).to.equal(false);
  });

  it('sets status, type, no-store and Vary: HX-Request on every HTML answer, and picks the page when there is no fragment', () => {
    const res = response();
    expect(htmlAnswer(request({ 'HX-Request': 'true' }), res, { status: 422, hasFragment: true })).to.equal('fragment');
    expect(res.sent).to.deep.equal({ status: 422, type: 'html', headers: { 'Cache-Control': 'no-store', Vary: 'HX-Request' } });
    expect(htmlAnswer(request({ 'HX-Request': 'true' }), response(), { hasFragment: false })).to.equal('page');
  });

  it('renders a page inside its layout, and a template alone, escaping data', () => {
    const views = new Views({ partials: 'views/setup/', layout: 'views/setup/layout.hbs' });
    const data = { heading: 'Oops <b>', message: 'try again' };
    const step = views.render('views/setup/error.hbs', data);
    expect(step).to.contain('<h1>Oops &lt;b&gt;</h1>').and.not.contain('<html');
    const page = views.page('views/setup/error.hbs', data, { title: 'Problem' });
    expect(page).to.match(/^<!doctype html>/).and.contain('<title>Problem · SkyHost setup</title>').and.contain(step);
  });

  it('shows a partial given already rendered in place of rendering it again', () => {
    const views = new Views({ partials: 'views/partials/', layout: 'views/layouts/main.hbs', helpers: { pct: () => 0, barLevel: () => 'ok', mib: () => '', time: () => '', ago: () => '' } });
    const kept = '<div id="dashboard" data-version="kept">as kept</div>';
    const page = views.page('views/pages/dashboard.hbs', {}, { title: 'Dashboard' }, { dashboard: kept });
    expect(page).to.contain(kept);
    expect(page.split('<div id="dashboard"').length).to.equal(2);
    expect(views.render('views/partials/flash.hbs', { message: 'hi', kind: 'info' })).to.contain('hi');
    expect(views.precompile(['views/pages/', 'views/partials/', 'views/layouts/'])).to.be.greaterThan(20);
  });
});
