// The pages of GET /api/vms (server/vms/list-pages.ts): the order, the cursor, and a page's bounds.
import { expect } from 'chai';
import { VersionedCache } from '../../base/cache.ts';
import { decodeCursor, encodeCursor, listOrder, pageOf } from '../../server/vms/list-pages.ts';

const vm = (id: string, createdAt: string) => ({ id, createdAt });

describe('VM list pages', () => {
  // Three VMs created in the same millisecond: the id decides among them.
  const sorted = [vm('d', '2026-12-01T10:00:03.000Z'), vm('a', '2026-12-01T10:00:02.000Z'), vm('b', '2026-12-01T10:00:02.000Z'),
    vm('c', '2026-12-01T10:00:02.000Z'), vm('e', '2026-12-01T10:00:01.000Z')].sort(listOrder);

  it('orders newest first, then by id', () => {
    expect(sorted.map((v) => v.id)).to.deep.equal(['d', 'a', 'b', 'c', 'e']);
  });

  it('walks every VM once through ties in the creation time', () => {
    const seen: string[] = [];
    let after: ReturnType<typeof decodeCursor>;
    for (let i = 0; i < 10; i++) {
      const page = pageOf(sorted, 2, after);
      seen.push(...page.items.map((v) => v.id));
      if (!page.next) break;
      after = decodeCursor(page.next);
    }
    expect(seen).to.deep.equal(['d', 'a', 'b', 'c', 'e']);
  });

  it('continues after a cursor whose VM is gone', () => {
    const gone = sorted.filter((v) => v.id !== 'b');
    expect(pageOf(gone, 10, vm('b', '2026-12-01T10:00:02.000Z')).items.map((v) => v.id)).to.deep.equal(['c', 'e']);
  });

  it('has no next page when the page reaches the end, and an empty page after the last VM', () => {
    expect(pageOf(sorted, 5).next).to.equal(undefined);
    expect(pageOf(sorted, 4).next).to.be.a('string');
    expect(pageOf(sorted, 4, sorted[4]).items).to.deep.equal([]);
  });

  it('reads back only cursors it made', () => {
    expect(decodeCursor(encodeCursor(sorted[1]!))).to.deep.equal({ id: 'a', createdAt: '2026-12-01T10:00:02.000Z' });
    for (const bad of ['', 'not a cursor', Buffer.from('yesterday\na').toString('base64url'), Buffer.from('2026-12-01T10:00:02.000Z').toString('base64url'),
      Buffer.from('2026-12-01T10:00:02.000Z\na\nb').toString('base64url')]) expect(decodeCursor(bad), bad).to.equal(undefined);
  });

  it('keeps values until the version changes, and at most max of them', () => {
    const cache = new VersionedCache<number>(2);
    let made = 0;
    const get = (version: string, key: string) => cache.get(version, key, () => ++made);
    expect([get('v1', 'a'), get('v1', 'a'), get('v1', 'b')]).to.deep.equal([1, 1, 2]);
    expect(get('v2', 'a')).to.equal(3);
    get('v2', 'b');
    get('v2', 'c');
    expect(get('v2', 'a')).to.equal(6);
  });
});
