// Sorted lists without ICU collation (base/order.ts): names a person reads, ids and timestamps.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { compareCodeUnits, compareNames } from '../../base/order.ts';
import { checkoutRoot } from '../../base/assets.ts';

describe('list order (base/order.ts)', () => {
  it('should put names in the order a reader expects, case aside, and keep the order total', () => {
    const names = ['lab-2', 'Lab-1', 'lab-10', 'Beamer', 'alpine', 'LAB-1', 'lab-1'];
    expect([...names].sort(compareNames)).to.deep.equal(['alpine', 'Beamer', 'LAB-1', 'Lab-1', 'lab-1', 'lab-10', 'lab-2']);
    // total: a shuffled input sorts the same
    expect([...names].reverse().sort(compareNames)).to.deep.equal([...names].sort(compareNames));
    expect(compareNames('lab-1', 'lab-1')).to.equal(0);
  });

  it('should order ISO 8601 timestamps and ids by their code units, the same in every locale', () => {
    const times = ['2026-12-02T10:00:00.000Z', '2026-01-31T23:59:59.999Z', '2026-12-02T09:59:59.999Z'];
    expect([...times].sort(compareCodeUnits)).to.deep.equal(['2026-01-31T23:59:59.999Z', '2026-12-02T09:59:59.999Z', '2026-12-02T10:00:00.000Z']);
    expect(['b', 'B', 'a', '_'].sort(compareCodeUnits)).to.deep.equal(['B', '_', 'a', 'b']);
  });

  it('should be the only order in the services: no localeCompare, which maps ICU collation data into the process', () => {
    const root = checkoutRoot();
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(path.join(root, dir), { withFileTypes: true })) {
        const rel = path.join(dir, e.name);
        if (e.isDirectory()) walk(rel);
        else if (e.name.endsWith('.ts') && rel !== path.join('base', 'order.ts') && /\.localeCompare\(/.test(readFileSync(path.join(root, rel), 'utf8'))) offenders.push(rel);
      }
    };
    for (const dir of ['agent', 'appliance', 'base', 'host', 'iso', 'server', 'wire']) walk(dir);
    expect(offenders).to.deep.equal([]);
  });
});
