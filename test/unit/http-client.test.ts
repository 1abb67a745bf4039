// The one HTTP client of agent <-> controller calls (base/http-client.ts) against a small server on
// loopback: JSON and the bearer key, errors in the one error model, deadlines, pooled or fresh
// connections.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import { HttpClient, RemoteError } from '../../base/http-client.ts';
import { SkyError } from '../../base/errors.ts';

describe('the shared HTTP client', () => {
  let server: Server;
  let base: string;
  let connections = 0;
  let handle: (req: IncomingMessage, body: string, res: ServerResponse) => void;

  before(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += String(c)));
      req.on('end', () => handle(req, body, res));
    });
    server.on('connection', () => connections++);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  beforeEach(() => {
    connections = 0;
  });

  const client = (o: Partial<ConstructorParameters<typeof HttpClient>[0]> = {}) =>
    new HttpClient({ baseUrl: base, bearer: 'key-0123456789abcdef', connection: 'pooled', peer: 'host pc-1', codePrefix: 'agent', ...o });
  const json = (res: ServerResponse, status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  const failure = async (p: Promise<unknown>): Promise<SkyError> => {
    try {
      await p;
    } catch (err) {
      expect(err).to.be.instanceOf(SkyError);
      return err as SkyError;
    }
    throw new Error('expected the call to fail');
  };

  it('should send JSON with the bearer key and give back the JSON answer', async () => {
    handle = (req, body, res) => json(res, 200, { method: req.method, url: req.url, auth: req.headers.authorization, type: req.headers['content-type'], got: JSON.parse(body) });
    expect(await client().call('POST', '/vms', { name: 'vm1' })).to.deep.equal({
      method: 'POST', url: '/vms', auth: 'Bearer key-0123456789abcdef', type: 'application/json', got: { name: 'vm1' },
    });
  });

  it('should pass on the other side\'s 4xx with its code, message and details', async () => {
    handle = (_req, _body, res) => json(res, 422, { error: { code: 'invalid_field', message: 'name: too long', details: { fields: [{ field: 'name', message: 'too long' }] } } });
    const err = await failure(client().call('POST', '/vms', {}));
    expect(err).to.be.instanceOf(RemoteError);
    expect(err).to.include({ status: 422, code: 'invalid_field', message: 'host pc-1: name: too long' });
    expect(err.details).to.deep.equal({ fields: [{ field: 'name', message: 'too long' }] });
  });

  it('should turn the other side\'s 5xx into a 502, keeping what it sent', async () => {
    handle = (_req, _body, res) => json(res, 500, { error: { code: 'internal', message: 'internal error' } });
    const err = await failure(client().call('GET', '/status')) as RemoteError;
    expect(err).to.include({ status: 502, remoteStatus: 500, code: 'internal' });
  });

  it('should name an answer that is not an error body by its status, with the caller\'s code', async () => {
    handle = (_req, _body, res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>no</h1>');
    const err = await failure(client().call('GET', '/nothing'));
    expect(err).to.include({ status: 404, code: 'agent_rejected', message: 'host pc-1: GET /nothing answered 404' });
  });

  it('should give up at the deadline with a 503 saying so', async () => {
    handle = () => {}; // never answers
    const err = await failure(client().call('GET', '/status', undefined, { timeoutMs: 100 }));
    expect(err).to.include({ status: 503, code: 'agent_unreachable', message: 'host pc-1 is unreachable: no answer within 100 ms' });
  });

  it('should give up at the deadline also when the answer started but its body does not end', async () => {
    handle = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"partial":');
    };
    const err = await failure(client().call('GET', '/status', undefined, { timeoutMs: 150 }));
    expect(err).to.include({ status: 503, message: 'host pc-1 is unreachable: no answer within 150 ms' });
  });

  it('should say when nothing listens', async () => {
    const err = await failure(client({ baseUrl: 'http://127.0.0.1:9' }).call('GET', '/status'));
    expect(err).to.include({ status: 503, code: 'agent_unreachable' });
    expect(err.message).to.match(/^host pc-1 is unreachable: .*ECONNREFUSED/);
  });

  it('should answer any status from request() without throwing', async () => {
    handle = (_req, _body, res) => json(res, 409, { error: { code: 'conflict', message: 'no' } });
    expect(await client().request('POST', '/api/enroll', { body: {} })).to.deep.equal({ status: 409, body: { error: { code: 'conflict', message: 'no' } } });
  });

  it('should refuse an answer larger than the limit', async () => {
    handle = (_req, _body, res) => json(res, 200, { big: 'x'.repeat(10_000) });
    const err = await failure(client({ maxAnswerBytes: 1000 }).call('GET', '/status'));
    expect(err.message).to.match(/answer larger than 1000 bytes/);
  });

  it('should stream a body through as it is', async () => {
    handle = (req, body, res) => json(res, 201, { type: req.headers['content-type'], length: body.length });
    const answer = await client().request('POST', '/templates?name=t', { body: Readable.from([Buffer.alloc(5000, 1)]), headers: { 'content-type': 'application/octet-stream' } });
    expect(answer).to.deep.equal({ status: 201, body: { type: 'application/octet-stream', length: 5000 } });
  });

  it('should reuse one connection when pooled and open one per call when fresh', async () => {
    handle = (_req, _body, res) => json(res, 200, { ok: true });
    const pooled = client({ baseUrl: base.replace('127.0.0.1', 'localhost') }); // its own pool entry
    for (let i = 0; i < 3; i++) await pooled.call('GET', '/healthz');
    expect(connections).to.equal(1);
    connections = 0;
    const fresh = client({ connection: 'fresh' });
    for (let i = 0; i < 3; i++) await fresh.call('GET', '/healthz');
    expect(connections).to.equal(3);
  });
  describe('a kept-alive connection the other side closes as a request goes out on it', () => {
    // A raw server: the n-th request on the c-th connection is answered when `answers(n, c)` says
    // true, else the connection is reset (RST), as a server whose keep-alive timeout fired just then
    // does: at once on false, after that many ms on a number; 'silent' never answers.
    let raw: ReturnType<typeof createTcpServer>;
    let rawBase: string;
    let rawConnections = 0;
    let received: string[] = [];
    let answers: (n: number, connection: number) => boolean | number | 'silent';
    /** Runs when a connection is reset (after a delay too). */
    let onReset: () => void = () => {};
    const sockets = new Set<Socket>();
    before(async () => {
      raw = createTcpServer((socket: Socket) => {
        const connection = ++rawConnections;
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
        let n = 0;
        let buffered = '';
        socket.on('data', (d: Buffer) => {
          buffered += String(d);
          for (let end = buffered.indexOf('\r\n\r\n'); end >= 0; end = buffered.indexOf('\r\n\r\n')) {
            const head = buffered.slice(0, end);
            const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
            if (buffered.length < end + 4 + length) return;
            received.push(head.split('\r\n')[0]! + ' ' + buffered.slice(end + 4, end + 4 + length));
            buffered = buffered.slice(end + 4 + length);
            const answer = answers(++n, connection);
            if (answer === 'silent') return;
            if (answer === false) return void (onReset(), socket.resetAndDestroy());
            if (typeof answer === 'number') return void setTimeout(() => (onReset(), socket.resetAndDestroy()), answer);
            const body = JSON.stringify({ request: n });
            socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: keep-alive\r\n\r\n${body}`);
          }
        });
      });
      await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
      rawBase = `http://127.0.0.1:${(raw.address() as AddressInfo).port}`;
    });
    after(async () => {
      await new Promise((r) => raw.close(r));
    });
    beforeEach(() => {
      rawConnections = 0;
      received = [];
      onReset = () => {};
    });
    afterEach(() => {
      for (const socket of sockets) socket.destroy(); // the silent ones
    });

    it('should send the request once more on a new connection, and not twice to a handler', async () => {
      answers = (n) => n === 1; // every connection answers its first request only
      const pooled = client({ baseUrl: rawBase });
      expect(await pooled.call('GET', '/status')).to.deep.equal({ request: 1 });
      expect(await pooled.call('POST', '/vms', { name: 'web-1' })).to.deep.equal({ request: 1 });
      expect(rawConnections).to.equal(2);
      // the stale connection got the POST and reset it; the new one got it and answered it
      expect(received).to.deep.equal(['GET /status HTTP/1.1 ', 'POST /vms HTTP/1.1 {"name":"web-1"}', 'POST /vms HTTP/1.1 {"name":"web-1"}']);
    });

    it('should not send again when a new connection is reset', async () => {
      answers = () => false;
      const e = await failure(client({ baseUrl: rawBase, connection: 'fresh' }).call('POST', '/vms', { name: 'web-1' }));
      expect(e.status).to.equal(503);
      expect(e.code).to.equal('agent_unreachable');
      expect(rawConnections).to.equal(1);
    });

    it('should give the new connection only what is left of the call\'s deadline', async () => {
      // The kept-alive connection is reset 1000 ms after the request went out on it; the new one never
      // answers. The call must end at its 3000 ms timeout, not at the reset + a fresh 3000 ms. Measured
      // from the reset as it happened, so that a loaded machine's late timers move both bounds alike.
      answers = (n, connection) => (connection === 1 ? (n === 1 ? true : 1000) : 'silent');
      const pooled = client({ baseUrl: rawBase });
      await pooled.call('GET', '/status');
      let resetAt = 0;
      onReset = () => { resetAt = performance.now(); };
      const t0 = performance.now();
      const e = await failure(pooled.call('POST', '/vms', { name: 'web-1' }, { timeoutMs: 3000 }));
      const ended = performance.now();
      expect(e).to.include({ status: 503, message: 'host pc-1 is unreachable: no answer within 3000 ms' });
      expect(rawConnections, 'it was sent again on a new connection').to.equal(2);
      expect(ended - t0, 'not before its deadline').to.be.at.least(2980);
      expect(ended - resetAt, 'time after the reset: what is left of the deadline, not a fresh 3000 ms').to.be.below(3000);
    });

    it('should not send again when the deadline has passed by the time the reset is seen', async () => {
      // The clock jumps past the deadline as the kept-alive connection is reset (the event loop was
      // busy that long): there is no time left for a new connection, so none is opened.
      answers = (n) => n === 1;
      const pooled = client({ baseUrl: rawBase });
      await pooled.call('GET', '/status');
      const realNow = performance.now.bind(performance);
      onReset = () => {
        performance.now = () => realNow() + 10_000;
      };
      try {
        const e = await failure(pooled.call('POST', '/vms', { name: 'web-1' }, { timeoutMs: 5000 }));
        expect(e).to.include({ status: 503, message: 'host pc-1 is unreachable: no answer within 5000 ms' });
      } finally {
        Reflect.deleteProperty(performance, 'now');
      }
      expect(performance.now()).to.be.below(realNow() + 1000); // the clock is the real one again
      expect(rawConnections).to.equal(1);
      expect(received).to.have.length(2);
    });
  });
});
