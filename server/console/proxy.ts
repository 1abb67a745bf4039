// The console proxy: `GET /api/vms/:id/console` (serial, text) and `/api/vms/:id/vnc` (RFB for noVNC)
// are WebSockets piped to the same paths on the VM's agent, for the VM's owner or an admin only.
// Bytes pass through unchanged in both directions (text stays text, binary stays binary).
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { toSkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import type { ControllerServices } from '../services.ts';
import { resolveAuth } from '../users/auth.ts';

const PATH = /^\/api\/vms\/([a-z0-9]{1,64})\/(console|vnc)$/;

function refuse(socket: Duplex, status: number, message: string): void {
  const body = JSON.stringify({ error: { code: status === 404 ? 'not_found' : status === 401 ? 'unauthorized' : 'unavailable', message } });
  socket.end(`HTTP/1.1 ${status} ${status === 404 ? 'Not Found' : status === 401 ? 'Unauthorized' : status === 403 ? 'Forbidden' : 'Service Unavailable'}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

/** Whether a browser's Origin belongs to this server (cookie-authenticated sockets only). */
function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (!origin) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

/**
 * The `upgrade` handler of the controller's HTTP server:
 *   server.on('upgrade', consoleUpgrade(services, log));
 * Other upgrade paths are refused with 404.
 */
export function consoleUpgrade(services: ControllerServices, log: Logger): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 4 * 1024 * 1024 });
  return (req, socket, head) => {
    socket.on('error', (err) => {
      log.debug('a browser\'s console connection broke', { err });
      socket.destroy();
    });
    const url = new URL(req.url ?? '/', 'http://controller');
    const m = PATH.exec(url.pathname);
    if (!m) return refuse(socket, 404, 'no WebSocket here');
    const auth = resolveAuth(services.users, req);
    if (!auth) return refuse(socket, 401, 'sign in first');
    if (auth.via === 'session' && !sameOrigin(req)) return refuse(socket, 403, 'cross-site WebSocket refused');
    if (auth.via === 'session' && auth.user.mustChangePassword) return refuse(socket, 403, 'choose a new password first');
    let target;
    try {
      target = services.vms.consoleTarget(auth.user, m[1]!);
    } catch (err) {
      const sky = toSkyError(err);
      return refuse(socket, sky.status, sky.message);
    }
    const kind = m[2]!;
    // wss:// to an https:// agent, through the agent pinned to its certificate (keystrokes never cross the LAN in clear)
    const { url: agentUrl, headers, agent } = services.hosts.client(target.host.id).socket(`/vms/${target.vm.id}/${kind}`);
    const upstream = new WebSocket(agentUrl, { headers, handshakeTimeout: 10_000, perMessageDeflate: false, ...(agent ? { agent } : {}) });
    const buffered: Array<{ data: WebSocket.RawData; binary: boolean }> = [];
    let client: WebSocket | undefined;

    upstream.on('unexpected-response', (_r, res) => {
      upstream.terminate();
      refuse(socket, res.statusCode === 404 ? 404 : 503, `the host refused the ${kind} console (${res.statusCode})`);
    });
    upstream.on('error', (err) => {
      // terminated because the browser left (browserGone logged it): there is no one to answer
      if (!client && socket.destroyed) return log.debug(`the connection to the host's ${kind} console ended before it opened`, { err, vmId: target.vm.id });
      if (!client) return refuse(socket, 503, `the host's ${kind} console is unreachable: ${err.message}`);
      client.close(1011, 'host console failed');
    });
    // the browser left while the agent was being dialled: nothing would ever close the agent's side
    const browserGone = () => {
      if (client || upstream.readyState === WebSocket.CLOSING || upstream.readyState === WebSocket.CLOSED) return;
      log.debug(`the browser left before the host's ${kind} console answered: closing the connection to the host`, { vmId: target.vm.id, hostId: target.host.id });
      upstream.terminate();
    };
    socket.once('close', browserGone);
    upstream.on('open', () => {
      if (socket.destroyed || !socket.writable) return browserGone();
      wss.handleUpgrade(req, socket, head, (ws) => {
        client = ws;
        log.info(`${kind === 'vnc' ? 'graphical' : 'serial'} console of VM ${target.vm.name} opened by ${auth.user.name}`,
          { vmId: target.vm.id, hostId: target.host.id });
        for (const b of buffered.splice(0)) ws.send(b.data, { binary: b.binary });
        ws.on('message', (data, binary) => {
          if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary });
        });
        ws.on('close', () => upstream.close());
        ws.on('error', (err) => {
          log.debug(`the browser's ${kind} console connection broke`, { err, vmId: target.vm.id });
          upstream.terminate();
        });
      });
    });
    upstream.on('message', (data, binary) => {
      if (client?.readyState === WebSocket.OPEN) client.send(data, { binary });
      else if (!client) buffered.push({ data, binary });
    });
    upstream.on('close', (code) => {
      if (client && client.readyState === WebSocket.OPEN) client.close(sendableCloseCode(code));
    });
  };
}

/** A close code that may be sent on (1005/1006 and reserved codes may not). */
function sendableCloseCode(code: number): number {
  return (code >= 3000 && code <= 4999) || [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011].includes(code) ? code : 1000;
}
