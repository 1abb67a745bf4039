import type { NetworkInterfaceInfo } from 'node:os';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { chooseController } from '../../agent/discovery/machine.ts';
import { readJoinToken } from '../../agent/discovery/remembered.ts';
import { defaultRouteIfaces, pickLanAddress } from '../../base/net.ts';
import { parseAd, type ControllerAd } from '../../wire/mdns.ts';
import { advertisedUrl, instanceName } from '../../server/discovery.ts';

const ad = (clusterId: string, name = `SkyHost controller ${clusterId}`, url = `http://10.0.0.${clusterId.length}:8080`): ControllerAd => ({ name, clusterId, url });
const v4 = (address: string, internal = false) => ({ address, family: 'IPv4', internal, netmask: '255.255.255.0', mac: '52:54:00:00:00:01', cidr: null }) as unknown as NetworkInterfaceInfo;

describe('discovery: reading an advertisement', () => {
  const service = (txt: Record<string, unknown>, referer = '10.1.2.3') => ({ name: 'SkyHost controller ab', port: 8080, txt, referer: { address: referer, family: 'IPv4' as const, port: 5353, size: 0 } });

  it('should take the TXT url and cluster', () => {
    expect(parseAd(service({ v: '1', cluster: 'abc123', url: 'http://10.9.9.9:8080/' }))).to.deep.equal({ name: 'SkyHost controller ab', clusterId: 'abc123', url: 'http://10.9.9.9:8080' });
  });
  it('should use the sender address when the TXT url is missing or a wildcard', () => {
    expect(parseAd(service({ v: '1', cluster: 'abc' }))).to.have.property('url', 'http://10.1.2.3:8080');
    expect(parseAd(service({ v: '1', cluster: 'abc', url: 'http://0.0.0.0:9000' }))).to.have.property('url', 'http://10.1.2.3:9000');
  });
  it('should refuse another TXT version, a malformed cluster or a non-http url with no sender', () => {
    expect(parseAd(service({ v: '2', cluster: 'abc' }))).to.have.property('invalid').that.match(/v=2/);
    expect(parseAd(service({ v: '1', cluster: 'a b' }))).to.have.property('invalid').that.match(/cluster/);
    expect(parseAd({ ...service({ v: '1', cluster: 'abc', url: 'ftp://x' }), referer: undefined })).to.have.property('invalid');
  });
});

describe('discovery: choosing a controller', () => {
  it('given no cluster yet, should take the only controller heard', () => {
    const c = chooseController([ad('aaa')]);
    expect(c).to.deep.include({ kind: 'chosen' });
  });
  it('given no cluster yet and two clusters heard, should not guess and should say so', () => {
    const c = chooseController([ad('aaa'), ad('bbbb')]);
    expect(c.kind).to.equal('ambiguous');
    expect((c as { message: string }).message).to.match(/2 SkyHost controllers.*aaa.*bbbb.*--controller/);
  });
  it('given two advertisements of one cluster, should take one of them', () => {
    expect(chooseController([ad('aaa', 'x'), ad('aaa', 'y')]).kind).to.equal('chosen');
  });
  it('given a cluster, should take its controller and ignore any other', () => {
    const c = chooseController([ad('evil'), ad('mine')], 'mine');
    expect(c).to.have.nested.property('ad.clusterId', 'mine');
  });
  it('given a cluster advertised at two addresses, should prefer the one it enrolled with', () => {
    const c = chooseController([ad('mine', 'a', 'http://10.0.0.9:8080'), ad('mine', 'b', 'http://10.0.0.5:8080')], 'mine', 'http://10.0.0.5:8080');
    expect(c).to.have.nested.property('ad.url', 'http://10.0.0.5:8080');
  });
  it('given a cluster and only another cluster heard, should wait rather than switch', () => {
    const c = chooseController([ad('evil')], 'mine');
    expect(c.kind).to.equal('none');
    expect((c as { message: string }).message).to.match(/cluster mine.*ignoring.*evil/);
  });
  it('given nothing heard, should keep searching', () => {
    expect(chooseController([]).kind).to.equal('none');
  });
});

describe('discovery: the LAN address', () => {
  const interfaces = { lo: [v4('127.0.0.1', true)], virbr0: [v4('192.168.122.1')], enp3s0: [v4('10.0.0.5')], wlan0: [v4('172.16.0.9')] };
  it('should take the default route interface', () => {
    expect(pickLanAddress({ interfaces, defaultRouteIfaces: ['wlan0', 'enp3s0'] })).to.deep.equal({ iface: 'wlan0', ip: '172.16.0.9' });
  });
  it('should never take a VM bridge, even one carrying the default route', () => {
    expect(pickLanAddress({ interfaces, defaultRouteIfaces: ['virbr0'] })).to.deep.equal({ iface: 'enp3s0', ip: '10.0.0.5' });
  });
  it('should follow lanInterface given as a name or an address', () => {
    expect(pickLanAddress({ lanInterface: 'enp3s0', interfaces, defaultRouteIfaces: ['wlan0'] })).to.deep.equal({ iface: 'enp3s0', ip: '10.0.0.5' });
    expect(pickLanAddress({ lanInterface: '10.0.0.5', interfaces, defaultRouteIfaces: [] })).to.deep.equal({ iface: 'enp3s0', ip: '10.0.0.5' });
    expect(pickLanAddress({ lanInterface: '10.0.0.99', interfaces, defaultRouteIfaces: [] })).to.equal(undefined);
  });
  it('should read default routes from /proc/net/route, lowest metric first', () => {
    const table = [
      'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
      'wlan0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0',
      'eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0',
      'eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0',
    ].join('\n');
    expect(defaultRouteIfaces(table)).to.deep.equal(['eth0', 'wlan0']);
  });
});

describe('discovery: names, URLs and the join token file', () => {
  it('should name the instance after the cluster', () => {
    expect(instanceName('3f9a1c2e77aa0011')).to.equal('SkyHost controller 3f9a1c2e');
  });
  it('should advertise publicUrl, else the LAN address', () => {
    expect(advertisedUrl({ publicUrl: 'http://sky.school.lan/', port: 8080 })).to.equal('http://sky.school.lan');
    expect(advertisedUrl({ port: 8080, lanIp: '10.0.0.5' })).to.equal('http://10.0.0.5:8080');
  });
  it('should prefer a configured token to the installer file', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-jt-'));
    try {
      const file = path.join(dir, 'join-token');
      expect(readJoinToken(undefined, file)).to.equal(undefined);
      writeFileSync(file, 'shj_fromtheusbstick\n');
      expect(readJoinToken(undefined, file)).to.equal('shj_fromtheusbstick');
      expect(readJoinToken('shj_fromtheflag', file)).to.equal('shj_fromtheflag');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
