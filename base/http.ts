// HTTP pieces the controller, the agent and the web installer share: the JSON error answer of the
// one error model, a body-size limit, and listening with a clean close.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import { NotFound, toSkyError, type SkyError } from './errors.ts';
import type { Logger } from './log.ts';

/**
 * An Express error handler of the one error model: the error as a SkyError, a 5xx logged with
 * `logMsg` (its stack never sent), a response already under way ended; otherwise `answer` replies.
 */
export function errorHandler(log: Logger, logMsg: string, answer: (sky: SkyError, req: Request, res: Response) => void): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const sky = toSkyError(err);
    if (sky.status >= 500) log.error(logMsg, { method: req.method, path: req.path, err });
    if (res.headersSent) {
      res.end();
      return;
    }
    answer(sky, req, res);
  };
}

/** Answers every error as `{ error: { code, message } }`; only 5xx are logged, never sent, with a stack. */
export function jsonErrors(log: Logger): ErrorRequestHandler {
  return errorHandler(log, 'request failed', (sky, _req, res) => {
    res.status(sky.status).json(sky.toBody());
  });
}

export const notFoundRoute: RequestHandler = (req, _res, next) => next(new NotFound(`${req.method} ${req.path}`));

/** Listens and resolves with the bound port (0 picks a free one). */
export function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Closes the server, ending idle keep-alive connections so the process can exit. */
export function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 2000).unref();
  });
}

/** Resolves on the first SIGINT or SIGTERM. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
