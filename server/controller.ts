// Runs the controller: services + app + HTTP server (with the console WebSocket upgrade), and stops
// it cleanly. `skyhost controller`, `skyhost up` and the tests all start it through here.
import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { RequestHandler } from 'express';
import { close, listen } from '../base/http.ts';
import type { Logger } from '../base/log.ts';
import { buildApp } from './app.ts';
import { consoleUpgrade } from './console/proxy.ts';
import { createServices, type ControllerServices, type ServicesOptions } from './services.ts';

/** How long a stop waits for HTTP requests under way before it cuts their connections. */
const STOP_HTTP_MS = 2000;
/** A process serving the controller exits this long after SIGTERM at the latest (server/serve.ts). */
export const STOP_LIMIT_MS = 4000;

export interface StartOptions extends ServicesOptions {
  port: number;
  listen: string;
  /** The URL agents and people reach this controller at (config `publicUrl`). */
  publicUrl?: string | undefined;
  /** Start the periodic polls (default true). */
  poll?: boolean;
  pages?: (services: ControllerServices) => RequestHandler;
}

export interface RunningController {
  services: ControllerServices;
  server: Server;
  port: number;
  /** e.g. `http://127.0.0.1:8080` */
  url: string;
  stop(): Promise<void>;
}

export async function startController(opts: StartOptions): Promise<RunningController> {
  const log: Logger = opts.log;
  const services = await createServices(opts);
  const app = buildApp({ log, services, publicUrl: opts.publicUrl, ...(opts.pages ? { pages: opts.pages(services) } : {}) });
  const server = createServer(app);
  // Console WebSockets are no longer the HTTP server's: a stop ends them itself, or close() would wait for them.
  const upgraded = new Set<Duplex>();
  server.on('upgrade', (_req, socket: Duplex) => {
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
  });
  server.on('upgrade', consoleUpgrade(services, log));
  server.headersTimeout = 20_000;
  server.requestTimeout = 0;
  let port: number;
  try {
    port = await listen(server, opts.port, opts.listen);
  } catch (err) {
    await services.stop();
    throw err;
  }
  if (opts.poll !== false) services.start();
  const host = opts.listen === '0.0.0.0' || opts.listen === '::' ? '127.0.0.1' : opts.listen;
  let stopping: Promise<void> | undefined;
  return {
    services, server, port, url: `http://${host}:${port}`,
    stop() {
      stopping ??= (async () => {
        for (const socket of upgraded) socket.destroy();
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<void>((resolve) => (timer = setTimeout(() => {
          log.warn(`HTTP connections still open ${STOP_HTTP_MS} ms after the stop began: stopping anyway`);
          server.closeAllConnections();
          resolve();
        }, STOP_HTTP_MS + 500)));
        await Promise.race([close(server), late]);
        clearTimeout(timer);
        await services.stop();
      })();
      return stopping;
    },
  };
}
