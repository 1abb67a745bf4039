// Pages of `GET /api/vms`: at most `limit` VMs per answer (default 500, at most 1,000), newest first,
// and a cursor to the next page (`?after=`, also sent as `Link: <...>; rel="next"`). A school
// district's 10,000 VMs are 3.7 MB of JSON: fifty clients reading that at once cannot all be answered
// within 100 ms on two cores, whatever the server (docs/performance.md measures a bare Node server).
//
// The cursor names the last VM of a page by its place in the order (created at, id), not by its
// index, so a VM created or deleted between two pages neither repeats nor skips the others.
import { gzipSync } from 'node:zlib';
import { z } from 'zod';

export const PAGE_DEFAULT = 500;
export const PAGE_MAX = 1000;

/** The query of GET /api/vms: its filters and its page. */
export const VmListQuery = z.object({
  host: z.string().optional().describe('only on this host'),
  state: z.string().optional().describe('only in this state'),
  owner: z.string().optional().describe('only of this user'),
  limit: z.coerce.number().int().min(1).max(PAGE_MAX).optional().describe(`VMs per page, 1-${PAGE_MAX} (default ${PAGE_DEFAULT})`),
  after: z.string().max(400).refine((s) => decodeCursor(s) !== undefined, 'not a cursor this controller made: take it from the last page\'s next')
    .optional().describe('the cursor of the page before (its `next` and its Link: rel="next" carry it)'),
});
export type VmListQuery = z.output<typeof VmListQuery>;

/** What the order and the cursor need of a VM. */
export interface Ordered {
  id: string;
  createdAt: string;
}

/** The list's order: newest first, then by id (so VMs created in the same millisecond keep one order). */
export function listOrder(a: Ordered, b: Ordered): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

export function encodeCursor(vm: Ordered): string {
  return Buffer.from(`${vm.createdAt}\n${vm.id}`).toString('base64url');
}

export function decodeCursor(cursor: string): Ordered | undefined {
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) return undefined;
  const [createdAt, id, extra] = Buffer.from(cursor, 'base64url').toString().split('\n');
  if (!createdAt || !id || extra !== undefined || Number.isNaN(Date.parse(createdAt))) return undefined;
  return { createdAt, id };
}

/** One page of `sorted` (in `listOrder`): the items after `after` (from the start without one), and the cursor of the next page if there is one. */
export function pageOf<T extends Ordered>(sorted: readonly T[], limit: number, after?: Ordered): { items: T[]; next?: string } {
  let lo = 0;
  if (after) {
    // The first item that comes after the cursor in the order.
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (listOrder(sorted[mid]!, after) <= 0) lo = mid + 1;
      else hi = mid;
    }
  }
  const items = sorted.slice(lo, lo + limit);
  return lo + limit < sorted.length ? { items, next: encodeCursor(items[items.length - 1]!) } : { items };
}

/** The answer's bytes, the gzipped bytes (made when first asked for) and the next page's URL. */
export interface PageAnswer {
  json: Buffer;
  gzip?: Buffer;
  next?: string;
}


/** The page's bytes gzipped, made once per page. */
export function gzipped(page: PageAnswer): Buffer {
  page.gzip ??= gzipSync(page.json, { level: 6 });
  return page.gzip;
}

/** `/api/vms?...` for the next page: the same filters and limit, after `cursor`. */
export function nextUrl(query: VmListQuery, limit: number, cursor: string): string {
  const params = new URLSearchParams();
  for (const k of ['host', 'state', 'owner'] as const) if (query[k] !== undefined) params.set(k, query[k]);
  params.set('limit', String(limit));
  params.set('after', cursor);
  return `/api/vms?${params.toString()}`;
}
