// The address lab PCs use: what the controller hands out whatever address the admin's browser used
// (server/install.ts), and what the web installer refuses or tests (appliance/setup/plan.ts, reach.ts).
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { ensureIdentity } from '../../base/tls.ts';
import { close, listen } from '../../base/http.ts';
import { lanAddress } from '../../base/net.ts';
import { checkOptionField, checkOptionsForm, emptyOptionsForm } from '../../appliance/setup/plan.ts';
import { reachController } from '../../appliance/setup/reach.ts';
import { controllerAddress, handOutBase, isLoopbackHost, loopbackNotice, reachableSsh } from '../../server/install.ts';
import { encodeJoinString } from '../../wire/api.ts';

describe('the controller address handed out (server/install.ts)', () => {
  describe('given the controller’s configuration and LAN address', () => {
    it('should take publicUrl first, then the LAN address it advertises, then a specific listen address', () => {
      expect(controllerAddress({ publicUrl: 'http://skyhost.school:8080/', listen: '0.0.0.0', port: 8080, lanIp: '10.0.0.5' }))
        .to.deep.equal({ url: 'http://skyhost.school:8080', source: 'config' });
      expect(controllerAddress({ listen: '0.0.0.0', port: 8080, lanIp: '10.0.0.5' })).to.deep.equal({ url: 'http://10.0.0.5:8080', source: 'lan' });
      expect(controllerAddress({ listen: '10.0.0.7', port: 9000 })).to.deep.equal({ url: 'http://10.0.0.7:9000', source: 'listen' });
    });

    it('should know no address when it listens on loopback or has no LAN address', () => {
      expect(controllerAddress({ listen: '127.0.0.1', port: 8080, lanIp: '10.0.0.5' }).url).to.equal(undefined);
      expect(controllerAddress({ listen: '0.0.0.0', port: 8080 }).url).to.equal(undefined);
    });
  });

  describe('given the address a browser used', () => {
    const lan = { http: 'http://10.0.0.5:8080', https: 'https://10.0.0.5:8443' };
    it('should hand out the LAN address for localhost, 127.0.0.1 and ::1, in the request’s scheme', () => {
      expect(handOutBase('http://localhost:8080', lan)).to.equal('http://10.0.0.5:8080');
      expect(handOutBase('http://127.0.0.1:8080', lan)).to.equal('http://10.0.0.5:8080');
      expect(handOutBase('https://[::1]:8443', lan)).to.equal('https://10.0.0.5:8443');
    });

    it('should keep the request’s own address only when the controller knows no other (or only a loopback one)', () => {
      expect(handOutBase('http://localhost:8080', {})).to.equal('http://localhost:8080');
      expect(handOutBase('https://localhost:8443', { https: 'https://127.0.0.1:8443' })).to.equal('https://localhost:8443');
    });

    it('should say so on a page opened through loopback, with the address lab PCs use', () => {
      expect(loopbackNotice('http://localhost:8080', 'http://10.0.0.5:8080')).to.deep.equal({ opened: 'http://localhost:8080', lanUrl: 'http://10.0.0.5:8080' });
      expect(loopbackNotice('http://localhost:8080', 'http://localhost:8080')).to.deep.equal({ opened: 'http://localhost:8080' });
      expect(loopbackNotice('http://10.0.0.5:8080', 'http://10.0.0.5:8080')).to.equal(undefined);
    });
  });

  it('should tell loopback names and addresses from others', () => {
    for (const h of ['localhost', 'LOCALHOST', 'app.localhost', '127.0.0.1', '127.1.2.3', '::1', '[::1]', '0.0.0.0']) expect(isLoopbackHost(h), h).to.equal(true);
    for (const h of ['10.0.0.5', 'skyhost.local', 'localhost.school.org', '128.0.0.1']) expect(isLoopbackHost(h), h).to.equal(false);
  });

  it('should give a student an SSH line with the controller’s LAN host when the host reported loopback', () => {
    const local = { host: '127.0.0.1', port: 20001, command: 'ssh -p 20001 sky@127.0.0.1' };
    expect(reachableSsh(local, { url: 'http://10.0.0.5:8080', source: 'lan' })).to.deep.equal({ host: '10.0.0.5', port: 20001, command: 'ssh -p 20001 sky@10.0.0.5' });
    const lanHost = { host: '10.0.0.12', port: 20001, command: 'ssh -p 20001 sky@10.0.0.12' };
    expect(reachableSsh(lanHost, { url: 'http://10.0.0.5:8080', source: 'lan' })).to.equal(lanHost);
    expect(reachableSsh(local, { url: undefined, source: 'none' })).to.equal(local);
  });
});

describe('the web installer’s controller address (appliance/setup)', () => {
  describe('given a loopback controller address', () => {
    it('should refuse http://127.0.0.1:8080 with a plain sentence saying why', () => {
      const message = checkOptionField('controllerUrl', 'http://127.0.0.1:8080');
      expect(message).to.contain("this PC's own address").and.to.contain('every lab PC');
      const errors = checkOptionsForm(emptyOptionsForm({ controllerUrl: 'http://localhost:8080', password: '' }));
      expect(Object.keys(errors)).to.deep.equal(['controllerUrl']);
    });

    it('should accept a LAN address, a name, and no address at all', () => {
      for (const v of ['http://10.0.0.5:8080', 'https://skyhost-controller.local:8443', '']) expect(checkOptionField('controllerUrl', v), v).to.equal(undefined);
    });

    it('should refuse a join string that names only loopback controller addresses', () => {
      const token = encodeJoinString({ addresses: ['https://127.0.0.1:8443'], fingerprint: 'a'.repeat(64), token: 'shj_abcdefgh1234' });
      expect(checkOptionField('joinToken', token)).to.contain("this PC's own address");
      const good = encodeJoinString({ addresses: ['https://10.0.0.5:8443'], fingerprint: 'a'.repeat(64), token: 'shj_abcdefgh1234' });
      expect(checkOptionField('joinToken', good)).to.equal(undefined);
    });
  });

  describe('given the Test button', () => {
    let server: Server | undefined;
    after(async () => {
      if (server) await close(server);
    });

    it('should refuse a loopback address without asking it', async () => {
      const r = await reachController('http://127.0.0.1:8080');
      expect(r.ok).to.equal(false);
      expect(r.message).to.contain("this PC's own address");
    });

    it('should say when nothing listens, and when nothing answers within its time limit', async function () {
      const ip = lanAddress()?.ip;
      if (!ip) this.skip(); // a machine with no LAN address has nothing but loopback to listen on
      const gone = createServer();
      const closedPort = await listen(gone, 0, ip!);
      await close(gone);
      const refused = await reachController(`http://${ip}:${closedPort}`);
      expect(refused.ok).to.equal(false);
      expect(refused.message).to.contain('nothing listens at that port');
      const silent = createServer(() => { /* never answers */ });
      const port = await listen(silent, 0, ip!);
      try {
        const started = Date.now();
        const r = await reachController(`http://${ip}:${port}`, 1500);
        expect(r.message).to.equal(`No answer from http://${ip}:${port} within 2 s: it did not answer in time. Check the address, and that this PC is on the school network and the controller runs.`);
        expect(Date.now() - started).to.be.within(1400, 4000);
      } finally {
        silent.closeAllConnections();
        await close(silent);
      }
    });

    it('should say what answers at a LAN address: a controller’s /healthz, or something else', async function () {
      const ip = lanAddress()?.ip;
      if (!ip) this.skip(); // a machine with no LAN address has nothing but loopback to listen on
      server = createServer((req, res) => {
        if (req.url === '/healthz') res.setHeader('content-type', 'application/json').end(JSON.stringify({ ok: true, version: '9.9.9', clusterId: 'c0ffee0123456789' }));
        else res.writeHead(404).end('no');
      });
      const port = await listen(server, 0, ip!);
      const r = await reachController(`http://${ip}:${port}`);
      expect(r, r.message).to.include({ ok: true });
      expect(r.message).to.contain('SkyHost 9.9.9, cluster c0ffee01');
      const other = await reachController(`http://${ip}:${port}/sub`);
      expect(other.ok).to.equal(true); // /healthz is asked at the root of the address
    });

    it('should check an HTTPS controller’s certificate against the fingerprint the join token names', async function () {
      const ip = lanAddress()?.ip;
      if (!ip) this.skip(); // a machine with no LAN address has nothing but loopback to listen on
      const dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-reach-'));
      const identity = await ensureIdentity(dir, { commonName: 'reach-test', altNames: [ip!] });
      const secure = createHttpsServer({ cert: identity.cert, key: identity.key }, (_req, res) => {
        res.setHeader('content-type', 'application/json').end(JSON.stringify({ ok: true, version: '9.9.9', clusterId: 'c0ffee0123456789' }));
      });
      try {
        const port = await listen(secure as unknown as Server, 0, ip!);
        const url = `https://${ip}:${port}`;
        const join = (fingerprint: string) => encodeJoinString({ addresses: [url], fingerprint, token: 'shj_abcdefgh1234' });
        const same = await reachController(url, 4000, join(identity.fingerprint));
        expect(same, same.message).to.include({ ok: true });
        expect(same.message).to.contain('its certificate is the one the join token names');
        const other = await reachController(url, 4000, join('b'.repeat(64)));
        expect(other.ok).to.equal(false);
        expect(other.message).to.contain('its certificate is not the one the join token names');
      } finally {
        secure.closeAllConnections();
        await close(secure as unknown as Server);
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
