// A browser-like client for the controller's pages over real HTTP: keeps the session cookie and the
// CSRF token the last page carried, and posts forms as a browser does (no redirects followed).
import { expect } from 'chai';

export interface PageAnswer { status: number; headers: Headers; text: string }

export class PageClient {
  cookie = '';
  csrf = '';
  readonly base: string;

  constructor(base: string) {
    this.base = base;
  }

  async get(p: string, headers: Record<string, string> = {}): Promise<PageAnswer> {
    const res = await fetch(this.base + p, { headers: { accept: 'text/html', cookie: this.cookie, ...headers }, redirect: 'manual' });
    const text = await res.text();
    const m = /name="_csrf" value="([^"]+)"/.exec(text);
    if (m) this.csrf = m[1]!;
    return { status: res.status, headers: res.headers, text };
  }

  /** Posts a form with the CSRF token (unless `csrf: false`). */
  async post(p: string, form: Record<string, string>, headers: Record<string, string> = {}, opts: { csrf?: boolean } = {}): Promise<PageAnswer> {
    const res = await fetch(this.base + p, {
      method: 'POST', redirect: 'manual',
      headers: { accept: 'text/html', 'content-type': 'application/x-www-form-urlencoded', cookie: this.cookie, ...headers },
      body: new URLSearchParams({ ...(opts.csrf === false ? {} : { _csrf: this.csrf }), ...form }),
    });
    const set = res.headers.get('set-cookie');
    if (set) this.cookie = set.split(';')[0]!;
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  async login(name: string, password: string): Promise<void> {
    const res = await this.post('/login', { name, password, next: '/' });
    expect(res.status, res.text).to.equal(303);
    await this.get('/');
  }

  /** The admin's first login: the admin token as a one-time password, then `password`. */
  async firstAdminLogin(adminToken: string, password: string): Promise<void> {
    expect((await this.post('/login', { name: 'admin', password: adminToken })).headers.get('location')).to.equal('/account/password');
    await this.get('/account/password');
    expect((await this.post('/account/password', { password, again: password })).status).to.equal(303);
    await this.get('/');
  }
}
