import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { JoinTokens, MAX_TTL_MINUTES } from '../../server/tokens.ts';

describe('join tokens', () => {
  let dir: string;
  let now: Date;
  let tokens: JoinTokens;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-tokens-'));
    mkdirSync(path.join(dir, 'secrets'));
    writeFileSync(path.join(dir, 'secrets', 'join-token'), 'shj_clustertoken0000\n', { mode: 0o600 });
    now = new Date('2026-01-01T10:00:00Z');
    tokens = new JoinTokens({ dataDir: dir, now: () => now });
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('should accept the cluster token any number of times', () => {
    expect(tokens.redeem('shj_clustertoken0000', 'h1')).to.deep.equal({ ok: true, kind: 'cluster' });
    expect(tokens.redeem('shj_clustertoken0000', 'h2').ok).to.equal(true);
  });

  it('given a rotated cluster token, should refuse the old one saying it was replaced', () => {
    const fresh = tokens.rotateClusterToken();
    expect(tokens.redeem(fresh, 'h1').ok).to.equal(true);
    const v = tokens.redeem('shj_clustertoken0000', 'h1');
    expect(v).to.deep.include({ ok: false, code: 'rotated' });
    expect(statSync(path.join(dir, 'secrets', 'join-token')).mode & 0o777).to.equal(0o600);
  });

  it('should let a single-use token enroll one host, and that host again', () => {
    const t = tokens.issue({ ttlMinutes: 60, label: 'room 12' });
    expect(tokens.redeem(t.token, 'h1')).to.deep.include({ ok: true, kind: 'single-use', id: t.id });
    expect(tokens.redeem(t.token, 'h1').ok).to.equal(true);
    const other = tokens.redeem(t.token, 'h2');
    expect(other).to.deep.include({ ok: false, code: 'used' });
    expect((other as { message: string }).message).to.match(/already used by host h1/);
    expect(tokens.list()[0]).to.deep.include({ id: t.id, state: 'used', usedBy: 'h1', label: 'room 12' });
  });

  it('should let a 3-use token (a USB stick for a room) enroll three hosts, each again, and refuse the fourth as used', () => {
    const t = tokens.issue({ ttlMinutes: 60, label: 'room 12', uses: 3 });
    expect(t.uses).to.equal(3);
    for (const h of ['h1', 'h2', 'h3']) expect(tokens.redeem(t.token, h), h).to.deep.include({ ok: true, kind: 'single-use', id: t.id });
    expect(tokens.redeem(t.token, 'h2').ok).to.equal(true);
    const fourth = tokens.redeem(t.token, 'h4');
    expect(fourth).to.deep.include({ ok: false, code: 'used' });
    expect((fourth as { message: string }).message).to.match(new RegExp(`join token ${t.id} was already used by all its 3 hosts \\(h1, h2, h3\\)`));
    expect(tokens.list()[0]).to.deep.include({ state: 'used', uses: 3, usesLeft: 0, usedBy: 'h1' });
    expect(tokens.list()[0]!.joined.map((j) => j.hostId)).to.deep.equal(['h1', 'h2', 'h3']);
  });

  it('should show the uses left, and keep a partly used token usable until its expiry', () => {
    const t = tokens.issue({ ttlMinutes: 1, uses: 2 });
    expect(tokens.redeem(t.token, 'h1').ok).to.equal(true);
    expect(tokens.list()[0]).to.deep.include({ state: 'unused', uses: 2, usesLeft: 1 });
    now = new Date(now.getTime() + 60_000);
    expect(tokens.redeem(t.token, 'h2')).to.deep.include({ ok: false, code: 'expired' });
    expect(tokens.redeem(t.token, 'h1').ok).to.equal(true);
  });

  it('should refuse a number of uses that is not a whole number from 1 to 200, naming the field', () => {
    for (const uses of [0, 201, 1.5, Number.NaN]) {
      expect(() => tokens.issue({ uses }), String(uses)).to.throw(/^uses: /).with.property('status', 422);
    }
    expect(tokens.issue({ uses: 200 }).uses).to.equal(200);
  });

  it('should read a token file from before counted tokens as one use each', () => {
    const t = tokens.issue();
    const file = path.join(dir, 'secrets', 'join-tokens.json');
    const old = JSON.parse(readFileSync(file, 'utf8'));
    const fresh = tokens.issue();
    old.singleUse = [
      { id: t.id, hash: old.singleUse[0].hash, label: '', createdAt: old.singleUse[0].createdAt, expiresAt: old.singleUse[0].expiresAt, usedBy: 'h1', usedAt: '2026-01-01T10:00:00.000Z' },
      { ...JSON.parse(readFileSync(file, 'utf8')).singleUse[1], uses: undefined, joined: undefined },
    ];
    writeFileSync(file, JSON.stringify(old));
    expect(tokens.list().map((x) => [x.state, x.usesLeft])).to.deep.equal([['unused', 1], ['used', 0]]);
    expect(tokens.redeem(t.token, 'h1').ok).to.equal(true);
    expect((tokens.redeem(t.token, 'h2') as { message: string }).message).to.match(/already used by host h1 at 2026-01-01T10:00:00/);
    expect(tokens.redeem(fresh.token, 'h5').ok).to.equal(true);
    expect(tokens.redeem(fresh.token, 'h6')).to.deep.include({ ok: false, code: 'used' });
  });

  it('should refuse a single-use token at its expiry, not a millisecond before', () => {
    const t = tokens.issue({ ttlMinutes: 1 });
    now = new Date(now.getTime() + 60_000 - 1);
    const fresh = new JoinTokens({ dataDir: dir, now: () => now });
    expect(fresh.list()[0]!.state).to.equal('unused');
    now = new Date(now.getTime() + 1);
    const v = fresh.redeem(t.token, 'h1');
    expect(v).to.deep.include({ ok: false, code: 'expired' });
    expect((v as { message: string }).message).to.match(/expired at 2026-01-01T10:01:00/);
  });

  it('should refuse a revoked token with the reason given', () => {
    const t = tokens.issue();
    tokens.revoke(t.id, 'stick lost in room 12');
    const v = tokens.redeem(t.token, 'h1');
    expect(v).to.deep.include({ ok: false, code: 'revoked' });
    expect((v as { message: string }).message).to.match(/stick lost in room 12/);
  });

  it('should refuse an unknown or tampered token without saying more', () => {
    const t = tokens.issue();
    expect(tokens.redeem(t.token.slice(0, -2) + 'xx', 'h1')).to.deep.include({ ok: false, code: 'unknown' });
    expect(tokens.redeem('shs_zz_zz', 'h1')).to.deep.include({ ok: false, code: 'unknown' });
    expect(tokens.redeem('whatever-token', 'h1')).to.deep.include({ ok: false, code: 'unknown' });
  });

  it('should name the field for a bad ttl, label or reason, and change nothing', () => {
    expect(() => tokens.issue({ ttlMinutes: 0 })).to.throw(/ttlMinutes/);
    expect(() => tokens.issue({ ttlMinutes: MAX_TTL_MINUTES + 1 })).to.throw(/ttlMinutes/);
    expect(() => tokens.issue({ label: 'x\ny' })).to.throw(/label/);
    expect(tokens.list()).to.have.length(0);
    const t = tokens.issue();
    expect(() => tokens.revoke(t.id, '  ')).to.throw(/reason/);
    expect(() => tokens.revoke('000000000000', 'x')).to.throw(/not found/);
    expect(tokens.list()[0]!.state).to.equal('unused');
  });

  it('should keep only hashes on disk', () => {
    const t = tokens.issue();
    const file = path.join(dir, 'secrets', 'join-tokens.json');
    expect(statSync(file).mode & 0o777).to.equal(0o600);
    // the secret is base64url and may itself contain "_": take everything after the id
    const secret = t.token.slice(`shs_${t.id}_`.length);
    expect(secret).to.have.length.above(20);
    expect(readFileSync(file, 'utf8')).not.to.contain(secret);
  });
});
