// HTTP pieces the controller, the agent and the web installer share: the JSON error answer of the
// one error model, a body-size limit, and listening with a clean close.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import { BadRequest, NotFound, SkyError, toSkyError } from './errors.ts';
import type { Logger } from './log.ts';

/**
 * An Express error handler of the one error model: the error as a SkyError, a 5xx logged with
 * `logMsg` (its stack never sent), a response already under way ended; otherwise `answer` replies.
 */
export function errorHandler(log: Logger, logMsg: string, answer: (sky: SkyError, req: Request, res: Response) => void): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const sky = badlyEncodedBody(err, req) ?? badlyEncodedUrl(err) ?? toSkyError(err);
    if (sky.status >= 500) log.error(logMsg, { method: req.method, path: req.path, err });
    if (res.headersSent) {
      res.end();
      return;
    }
    answer(sky, req, res);
  };
}

/**
 * A body whose Content-Encoding (gzip, deflate, br, zstd) does not decompress: the body parser
 * passes zlib's own error on, which is the client's fault (400), not the server's.
 */
function badlyEncodedBody(err: unknown, req: Request): SkyError | undefined {
  const encoding = req.get('content-encoding');
  if (!encoding || /^\s*identity\s*$/i.test(encoding) || err instanceof SkyError) return undefined;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !/^(Z_|ZSTD_|ERR__ERROR_|ERR_BROTLI|ERR_ZLIB|ERR_ZSTD)/.test(code)) return undefined;
  return new BadRequest(`request body could not be decompressed (Content-Encoding: ${encoding.slice(0, 32)})`, undefined, 'bad_encoding');
}

/** A path like `/api/users/%` that does not percent-decode: Express's router throws a URIError (400). */
function badlyEncodedUrl(err: unknown): SkyError | undefined {
  if (!(err instanceof URIError) || (err as { status?: unknown }).status !== 400) return undefined;
  return new BadRequest('the URL is not valid percent-encoding', undefined, 'bad_url');
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
