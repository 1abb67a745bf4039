// Serves the embedded assets under /static/ (htmx, xterm.js, noVNC, our CSS): nothing from a CDN.
import type { RequestHandler } from 'express';
import { contentType, inSingleExecutable, readAsset } from '../base/assets.ts';

export function staticAssets(): RequestHandler {
  const cacheControl = inSingleExecutable() ? 'public, max-age=3600' : 'no-cache';
  return (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const key = 'static/' + req.path.replace(/^\/+/, '');
    if (key.includes('..')) return next();
    const body = readAsset(key);
    if (!body) return next();
    res.setHeader('Content-Type', contentType(key));
    res.setHeader('Cache-Control', cacheControl);
    res.send(body);
  };
}
