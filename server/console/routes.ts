// The consoles are WebSockets, answered by the HTTP server's `upgrade` handler (proxy.ts). They are
// registered here as operations too, so the document lists them; a plain GET is told to upgrade.
import { SkyError } from '../../base/errors.ts';
import { me, param, type ApiRouter } from '../api/route.ts';
import type { ControllerServices } from '../services.ts';

const CONSOLES = [
  { kind: 'console', summary: 'WebSocket: the serial console (text, unframed)' },
  { kind: 'vnc', summary: 'WebSocket: the graphical console (RFB, for noVNC)' },
];

export function consoleRoutes(api: ApiRouter, services: ControllerServices): void {
  for (const { kind, summary } of CONSOLES) {
    api.route({
      method: 'get', path: `/api/vms/:id/${kind}`, summary, auth: 'user',
      responses: { 101: 'switching to the WebSocket', 426: 'a plain GET: connect with Upgrade: websocket' },
    }, (req, res) => {
      services.vms.get(me(res), param(req, 'id')); // another user's VM is a 404, as on the WebSocket
      throw new SkyError(426, 'upgrade_required', `the ${kind} console is a WebSocket: connect with Upgrade: websocket`);
    });
  }
}
