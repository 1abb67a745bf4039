// Runs the controller: services + app + HTTP and HTTPS servers (with the console WebSocket upgrade),
// and stops it cleanly. `skyhost controller`, `skyhost up` and the tests all start it through here.
// HTTPS (server/tls.ts) serves agents and the LAN; HTTP serves loopback clients, and LAN clients
// only on a trusted LAN (others are sent to HTTPS).
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import type { RequestHandler } from 'express';
import { close, listen } from '../base/http.ts';
import type { Logger } from '../base/log.ts';
import { buildApp } from './app.ts';
import { consoleUpgrade } from './console/proxy.ts';
import { createServices, type ControllerServices, type ServicesOptions } from './services.ts';
import { controllerAddress, setControllerAddress } from './install.ts';
import { lanAddress } from '../base/net.ts';
import { agentAddresses, httpsServerOptions, redirectToHttps, refuseLanUpgrade } from './tls.ts';

/** How long a stop waits for HTTP requests under way before it cuts their connections. */
const STOP_HTTP_MS = 2000;
/** A process serving the controller exits this long after SIGTERM at the latest (server/serve.ts). */
export const STOP_LIMIT_MS = 4000;

export interface StartOptions extends ServicesOptions {
  port: number;
  listen: string;
  /** The URL agents and people reach this controller at (config `publicUrl`). */
  publicUrl?: string | undefined;
  /** The LAN interface (config `lanInterface`): its address goes into what the controller hands out. */
  lanInterface?: string | undefined;
  /** This machine's LAN address, when the caller knows it better than the interface list (tests). */
  lanIp?: string | undefined;
  /** Start the periodic polls (default true). */
  poll?: boolean;
  pages?: (services: ControllerServices) => RequestHandler;
  /**
   * Serve HTTPS on this port (0: any free one) with the controller's own certificate, or the
   * school's for clients that name the server (SNI). Without it, only HTTP, for everyone.
   */
  https?: { port: number; school?: { cert: string; key: string } | undefined };
  /** The HTTP port serves LAN clients too (config `trustedLan`); otherwise they are sent to HTTPS. */
  trustedLan?: boolean;
}

export interface RunningController {
  services: ControllerServices;
  server: Server;
  port: number;
  /** e.g. `http://127.0.0.1:8080` */
  url: string;
  /** The HTTPS port and URL (e.g. `https://127.0.0.1:8443`), when started with `https`. */
  httpsPort?: number;
  httpsUrl?: string;
  /** What agents are given to join: this controller's HTTPS addresses and its certificate's fingerprint. */
  fingerprint: string;
  stop(): Promise<void>;
}

export async function startController(opts: StartOptions): Promise<RunningController> {
  const log: Logger = opts.log;
  const services = await createServices(opts);
  const app = buildApp({ log, services, publicUrl: opts.publicUrl, ...(opts.pages ? { pages: opts.pages(services) } : {}) });
  const gate = opts.https && !opts.trustedLan ? opts.https : undefined;
  let httpsPort = 0;
  const server = createServer(gate ? (req, res) => {
    if (!redirectToHttps(req, res, httpsPort)) app(req, res);
  } : app);
  const secure = opts.https ? createHttpsServer(httpsServerOptions(services.tls, opts.https.school), app) : undefined;
  // Console WebSockets are no longer the HTTP server's: a stop ends them itself, or close() would wait for them.
  const upgraded = new Set<Duplex>();
  const consoles = consoleUpgrade(services, log);
  for (const s of secure ? [server, secure] : [server]) {
    s.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      upgraded.add(socket);
      socket.once('close', () => upgraded.delete(socket));
      if (s === server && gate && refuseLanUpgrade(socket, req.socket.remoteAddress)) return;
      consoles(req, socket, head);
    });
    s.headersTimeout = 20_000;
    s.requestTimeout = 0;
  }
  let port: number;
  try {
    port = await listen(server, opts.port, opts.listen);
    if (secure) httpsPort = await listen(secure as unknown as Server, opts.https!.port, opts.listen);
  } catch (err) {
    if (server.listening) await close(server);
    await services.stop();
    throw err;
  }
  const lanIp = opts.lanIp ?? lanAddress(opts.lanInterface)?.ip;
  // Commands, links and scripts the pages hand out carry this, whatever address the browser used (server/install.ts).
  setControllerAddress(services.hosts, controllerAddress({ publicUrl: opts.publicUrl, listen: opts.listen, port, lanIp }));
  if (secure) {
    services.joinTokens.addresses = agentAddresses({ listen: opts.listen, httpsPort, publicUrl: opts.publicUrl, lanIp });
  }
  if (opts.poll !== false) services.start();
  const host = opts.listen === '0.0.0.0' || opts.listen === '::' ? '127.0.0.1' : opts.listen;
  let stopping: Promise<void> | undefined;
  return {
    services, server, port, url: `http://${host}:${port}`, fingerprint: services.tls.fingerprint,
    ...(secure ? { httpsPort, httpsUrl: `https://${host.includes(':') ? `[${host}]` : host}:${httpsPort}` } : {}),
    stop() {
      stopping ??= (async () => {
        for (const socket of upgraded) socket.destroy();
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<void>((resolve) => (timer = setTimeout(() => {
          log.warn(`HTTP connections still open ${STOP_HTTP_MS} ms after the stop began: stopping anyway`);
          server.closeAllConnections();
          secure?.closeAllConnections();
          resolve();
        }, STOP_HTTP_MS + 500)));
        await Promise.race([Promise.all([close(server), secure ? close(secure as unknown as Server) : undefined]), late]);
        clearTimeout(timer);
        await services.stop();
      })();
      return stopping;
    },
  };
}
