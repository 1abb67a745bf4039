// A process for discovery tests, run inside a network namespace:
//   discovery-peer.ts advertise --cluster ID --url URL --port P [--enroll-endpoint] [--token T]
//     publishes like a controller; with --enroll-endpoint it also answers /healthz and
//     POST /api/enroll (token T -> ready, none -> pending) and GET /api/hosts, so that the
//     two-controllers rule is testable without the real controller. With --tls DIR it serves HTTPS
//     with a certificate of its own (made in DIR) and advertises its fingerprint in TXT fp, as a
//     controller does (a rogue controller, for the pinning tests); every request is logged
//     ("request" lines with method, path and whether a join token came), so a test can count them.
//   discovery-peer.ts agent --host-id H --data DIR --port P [--join-token T] [--controller URL]
//     runs agent/discovery/'s enroll loop and serves GET /status { controller } on port P.
//   discovery-peer.ts listen --lan-ip IP
//     sends no query; prints a JSON line for every mDNS response that announces _skyhost._tcp.
//     (Its ready line comes once its socket is bound.)
// Prints one JSON line `{"ready":true,...}` when it is up. Exits on SIGTERM/SIGINT.
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { ensureIdentity } from '../../base/tls.ts';
import { parseArgs } from 'node:util';
import { configureLogging, logger } from '../../base/log.ts';
import { startDiscovery } from '../../agent/discovery/index.ts';
import { EnrollRequest } from '../../wire/api.ts';
import { startAdvertising } from '../../server/discovery.ts';
import { Bonjour } from 'bonjour-service';

configureLogging({ format: 'json', level: 'debug' });
const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    cluster: { type: 'string' }, url: { type: 'string' }, port: { type: 'string' }, token: { type: 'string' },
    'enroll-endpoint': { type: 'boolean' }, 'host-id': { type: 'string' }, data: { type: 'string' },
    'join-token': { type: 'string' }, controller: { type: 'string' }, 'reannounce-ms': { type: 'string' }, 'lan-ip': { type: 'string' },
    tls: { type: 'string' },
  },
});
const port = Number(values.port);
const json = (res: import('node:http').ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
};
const readBody = async (req: import('node:http').IncomingMessage) => {
  let s = '';
  for await (const c of req) s += String(c);
  return s;
};

if (positionals[0] === 'advertise') {
  const log = logger('peer-controller');
  const hosts = new Map<string, { hostId: string; agentUrl: string; state: string }>();
  const identity = values.tls ? await ensureIdentity(values.tls, { commonName: 'peer-controller' }) : undefined;
  const handler = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    void (async () => {
      const body = req.method === 'POST' ? await readBody(req) : '';
      log.info('request', { method: req.method, path: req.url, joinToken: body.includes('joinToken'), authorization: req.headers.authorization !== undefined });
      if (req.url === '/healthz') return json(res, 200, { ok: true });
      if (req.url === '/api/hosts') return json(res, 200, [...hosts.values()]);
      if (req.method === 'POST' && req.url === '/api/enroll') {
        const parsed = EnrollRequest.safeParse(JSON.parse(body));
        if (!parsed.success) return json(res, 400, { error: { code: 'bad_request', message: parsed.error.message } });
        const r = parsed.data;
        const old = hosts.get(r.hostId);
        const state = old?.state === 'ready' || (values.token && r.joinToken === values.token) ? 'ready' : 'pending';
        hosts.set(r.hostId, { hostId: r.hostId, agentUrl: r.agentUrl, state });
        log.info(`host ${r.hostId} enrolled (${state})`, { hostId: r.hostId, agentUrl: r.agentUrl });
        return json(res, 200, { hostId: r.hostId, state, clusterId: values.cluster });
      }
      json(res, 404, { error: { code: 'not_found', message: 'not found' } });
    })();
  };
  const server = identity ? createHttpsServer({ cert: identity.cert, key: identity.key }, handler) : createServer(handler);
  if (values['enroll-endpoint']) server.listen(port, '0.0.0.0');
  const ad = startAdvertising({
    clusterId: values.cluster!, url: values.url!, port, log, reannounceMs: Number(values['reannounce-ms'] ?? 5000),
    ...(identity ? { fingerprint: identity.fingerprint } : {}),
  });
  process.stdout.write(JSON.stringify({ ready: true, name: ad.name, ...(identity ? { fingerprint: identity.fingerprint } : {}) }) + '\n');
  const exit = () => void ad.stop().then(() => process.exit(0));
  process.on('SIGTERM', exit);
  process.on('SIGINT', exit);
} else if (positionals[0] === 'agent') {
  const log = logger('peer-agent');
  const d = startDiscovery({
    dataDir: values.data!, hostId: values['host-id']!, hostname: 'peer', agentKey: 'k'.repeat(32), version: 'test',
    agentPort: port, joinToken: values['join-token'], controllerUrl: values.controller, log, tickMs: 200,
  });
  const server = createServer((req, res) => {
    if (req.url === '/status') return json(res, 200, { controller: d.state() });
    json(res, 404, {});
  });
  server.listen(port, '0.0.0.0', () => process.stdout.write(JSON.stringify({ ready: true }) + '\n'));
  const exit = () => void d.stop().then(() => process.exit(0));
  process.on('SIGTERM', exit);
  process.on('SIGINT', exit);
} else if (positionals[0] === 'listen') {
  const bonjour = new Bonjour({ interface: values['lan-ip'], bind: '0.0.0.0' } as object);
  const mdns = (bonjour as unknown as { server: { mdns: NodeJS.EventEmitter } }).server.mdns;
  mdns.on('response', (packet: { answers: { type: string; name: string }[] }, rinfo: { address: string }) => {
    if (packet.answers.some((a) => a.type === 'PTR' && a.name === '_skyhost._tcp.local')) {
      process.stdout.write(JSON.stringify({ from: rinfo.address, at: Date.now() }) + '\n');
    }
  });
  mdns.once('ready', () => process.stdout.write(JSON.stringify({ ready: true }) + '\n'));
  process.on('SIGTERM', () => bonjour.destroy(() => process.exit(0)));
} else {
  process.stderr.write('usage: discovery-peer.ts advertise|agent|listen ...\n');
  process.exit(2);
}
