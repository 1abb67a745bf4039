// The dashboard's host tiles: every host of a room, at most DASHBOARD_TILES of a district's.
import { expect } from 'chai';
import { DASHBOARD_TILES, dashboardTiles, type HostRow } from '../../server/pages/dashboard.ts';

function row(i: number, over: Partial<HostRow> = {}): HostRow {
  return { id: `h${i}`, hostname: `pc-${i}`, label: `pc-${i}`, url: '', state: 'ready', threads: 4, cpuPct: 0, memUsed: 0, memTotal: 0, memPct: 0, vms: 0, ...over };
}

describe('dashboard tiles', () => {
  it('shows every host of a room in its order', () => {
    const room = Array.from({ length: DASHBOARD_TILES }, (_, i) => row(i, { cpuPct: i % 7 }));
    expect(dashboardTiles(room)).to.deep.equal(room);
  });

  it('shows a district the hosts that need a look first, then the busiest, and no more than the limit', () => {
    const district = Array.from({ length: 1000 }, (_, i) => row(i, { cpuPct: i % 100 }));
    district[500] = row(500, { state: 'down', cpuPct: 0 });
    district[501] = row(501, { problem: 'its certificate changed', cpuPct: 1 });
    const tiles = dashboardTiles(district);
    expect(tiles).to.have.length(DASHBOARD_TILES);
    expect(tiles.slice(0, 2).map((t) => t.id)).to.deep.equal(['h501', 'h500']);
    expect(tiles.slice(2).every((t) => t.cpuPct >= 99 - Math.ceil((DASHBOARD_TILES - 2) / 10))).to.equal(true);
    expect(district[0]!.id, 'the list itself is not reordered').to.equal('h0');
  });
});
