// Pinned TLS (base/tls.ts) against real TLS servers on loopback with certificates made by openssl:
// the pinned certificate is trusted, any other is refused before a byte of HTTP (and so before the
// bearer key) reaches it.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import http from 'node:http';
import { listen } from '../../base/http.ts';
import { ensureIdentity, fingerprintOf, normalizeFingerprint, PinnedAgent, showFingerprint, tlsOrPlainServer, type TlsIdentity } from '../../base/tls.ts';

describe('pinned TLS between machines', function () {
  this.timeout(30_000);
  let dir: string;
  let real: TlsIdentity;
  let impostor: TlsIdentity;
  let server: https.Server;
  let url: string;
  const seen: string[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-tls-'));
    real = await ensureIdentity(path.join(dir, 'real'), { commonName: 'skyhost-controller', altNames: ['127.0.0.1', 'lab-pc', 'bad name;rm'] });
    impostor = await ensureIdentity(path.join(dir, 'impostor'), { commonName: 'skyhost-controller' });
    server = https.createServer({ cert: real.cert, key: real.key }, (req, res) => {
      seen.push(String(req.headers.authorization));
      res.end('{"ok":true}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/status`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  function get(agent: https.Agent): Promise<string> {
    return new Promise((resolve, reject) => {
      https.get(url, { agent, headers: { authorization: 'Bearer secret-key' } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += String(c)));
        res.on('end', () => resolve(body));
      }).on('error', reject);
    });
  }

  it('makes a certificate once, keeps its key private, and finds it again', async () => {
    expect(statSync(path.join(dir, 'real', 'tls.key')).mode & 0o777).to.equal(0o600);
    const again = await ensureIdentity(path.join(dir, 'real'), { commonName: 'other' });
    expect(again.fingerprint).to.equal(real.fingerprint);
    expect(real.fingerprint).to.match(/^[0-9a-f]{64}$/);
    expect(real.fingerprint).to.not.equal(impostor.fingerprint);
  });

  it('talks to the pinned certificate, over pooled connections too', async () => {
    const agent = new PinnedAgent(real.fingerprint, { keepAlive: true });
    expect(await get(agent)).to.equal('{"ok":true}');
    expect(await get(agent)).to.equal('{"ok":true}');
    agent.destroy();
  });

  it('refuses another certificate before sending the request', async () => {
    seen.length = 0;
    const agent = new PinnedAgent(impostor.fingerprint);
    let error: (Error & { code?: string }) | undefined;
    try {
      await get(agent);
    } catch (err) {
      error = err as Error;
    }
    expect(error?.code).to.equal('untrusted_peer');
    expect(error?.message).to.contain(showFingerprint(impostor.fingerprint));
    expect(seen).to.deep.equal([]); // the bearer key never reached the impostor's side
    agent.destroy();
  });

  it('reads fingerprints written by other tools and refuses garbage', () => {
    const colons = real.fingerprint.toUpperCase().match(/.{2}/g)!.join(':');
    expect(normalizeFingerprint(colons)).to.equal(real.fingerprint);
    expect(normalizeFingerprint(`sha256:${real.fingerprint}`)).to.equal(real.fingerprint);
    expect(fingerprintOf(real.cert)).to.equal(real.fingerprint);
    expect(() => normalizeFingerprint('abc')).to.throw(/fingerprint/);
  });

  it('closes at once with idle keep-alive clients on both protocols, and still lets a busy request finish', async () => {
    let release: (() => void) | undefined;
    const both = tlsOrPlainServer((req, res) => {
      if (req.url === '/slow') release = () => res.end('late');
      else res.end('{"ok":true}');
    }, real, () => true);
    await new Promise<void>((resolve) => both.net.listen(0, '127.0.0.1', resolve));
    const port = (both.net.address() as AddressInfo).port;
    const plainAgent = new http.Agent({ keepAlive: true });
    const tlsAgent = new PinnedAgent(real.fingerprint, { keepAlive: true });
    const fetchText = (mod: typeof http | typeof https, agent: http.Agent, p: string) => new Promise<string>((resolve, reject) => {
      mod.get(`${mod === http ? 'http' : 'https'}://127.0.0.1:${port}${p}`, { agent }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(body));
      }).on('error', reject);
    });
    expect(await fetchText(http, plainAgent, '/')).to.equal('{"ok":true}');
    expect(await fetchText(https, tlsAgent, '/')).to.equal('{"ok":true}');
    // both connections now idle in their pools: before the servers tracked them, close() waited its whole grace
    const slow = fetchText(http, new http.Agent({ keepAlive: false }), '/slow');
    while (!release) await new Promise((r) => setTimeout(r, 10)); // the busy request has reached its handler
    const finish = release;
    const started = performance.now();
    const closed = both.close(5000);
    setTimeout(() => finish(), 300);
    expect(await slow).to.equal('late');
    await closed;
    expect(performance.now() - started).to.be.below(4500); // not its whole 5 s grace (the slack is for a loaded machine)
    plainAgent.destroy();
    tlsAgent.destroy();
  });
});
