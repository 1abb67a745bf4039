// Wake-on-LAN's packet and where it goes: the magic packet byte by byte (also as received by a real UDP
// socket), the broadcast address of the host's subnet from the controller's netmasks, the MAC of the
// interface an agent reaches its controller through, and the room's wake-up schedule in the admin's words.
import { createSocket } from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { macOfAddress, physicalPortMac } from '../../agent/discovery/mac.ts';
import { scheduleToCron } from '../../server/hosts/wake.ts';
import { broadcastFor, magicPacket, sendWake } from '../../server/hosts/wol.ts';

const iface = (address: string, netmask: string, over: Partial<os.NetworkInterfaceInfo> = {}): os.NetworkInterfaceInfo =>
  ({ address, netmask, family: 'IPv4', mac: '52:54:00:12:34:56', internal: false, cidr: null, ...over }) as os.NetworkInterfaceInfo;

/** Checks a packet the way the issue asks: 6 x 0xFF, then the MAC 16 times, nothing else. */
function expectMagic(packet: Buffer, mac: string): void {
  const bytes = mac.split(/[:-]/).map((h) => parseInt(h, 16));
  expect(packet.length).to.equal(102);
  for (let i = 0; i < 6; i++) expect(packet[i], `byte ${i}`).to.equal(0xff);
  for (let r = 0; r < 16; r++) for (let i = 0; i < 6; i++) expect(packet[6 + r * 6 + i], `repeat ${r} byte ${i}`).to.equal(bytes[i]);
}

describe('Wake-on-LAN', () => {
  it('should make the magic packet: 6 x 0xFF, then the MAC 16 times', () => {
    expectMagic(magicPacket('aa:bb:cc:dd:ee:0f'), 'aa:bb:cc:dd:ee:0f');
    expectMagic(magicPacket('AA-BB-CC-DD-EE-0F'), 'aa:bb:cc:dd:ee:0f');
    expect(() => magicPacket('aa:bb:cc:dd:ee')).to.throw(TypeError);
  });

  it('should send it over UDP as a real socket receives it', async () => {
    const sock = createSocket('udp4');
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
    const got = new Promise<Buffer>((resolve) => sock.once('message', (m) => resolve(m)));
    try {
      await sendWake('02:00:5e:10:00:01', '127.0.0.1', sock.address().port);
      expectMagic(await got, '02:00:5e:10:00:01');
    } finally {
      sock.close();
    }
  });

  const rows: Array<[string, string, NodeJS.Dict<os.NetworkInterfaceInfo[]>, string]> = [
    ['a host on the controller\'s /24', '10.0.0.12', { eth0: [iface('10.0.0.5', '255.255.255.0')] }, '10.0.0.255'],
    ['a /22 LAN', '192.168.5.7', { eno1: [iface('192.168.4.1', '255.255.252.0')] }, '192.168.7.255'],
    ['the narrowest subnet that holds the host', '10.1.2.3', { a: [iface('10.0.0.1', '255.0.0.0')], b: [iface('10.1.2.1', '255.255.255.0')] }, '10.1.2.255'],
    ['a host on a routed subnet: the limited broadcast', '172.16.0.9', { eth0: [iface('10.0.0.5', '255.255.255.0')] }, '255.255.255.255'],
    ['loopback does not count', '127.0.0.1', { lo: [iface('127.0.0.1', '255.0.0.0', { internal: true })] }, '255.255.255.255'],
    ['a name or IPv6 address: the limited broadcast', 'fe80::1', { eth0: [iface('10.0.0.5', '255.255.255.0')] }, '255.255.255.255'],
  ];
  for (const [what, address, interfaces, want] of rows) {
    it(`should send to ${want} for ${what}`, () => expect(broadcastFor(address, interfaces)).to.equal(want));
  }
});

describe('the MAC address an agent reports', () => {
  let sysfs: string;
  before(() => {
    sysfs = mkdtempSync(path.join(os.tmpdir(), 'skyhost-sysfs-'));
    // br0 bridges a real NIC (enp3s0, with `device`) and a VM's tap (no `device`).
    for (const dir of ['br0/bridge', 'br0/brif/enp3s0', 'br0/brif/atap0', 'enp3s0/device', 'atap0']) mkdirSync(path.join(sysfs, dir), { recursive: true });
    writeFileSync(path.join(sysfs, 'enp3s0/address'), '00:1A:2B:3C:4D:5E\n');
    writeFileSync(path.join(sysfs, 'atap0/address'), 'fe:54:00:00:00:01\n');
  });
  after(() => rmSync(sysfs, { recursive: true, force: true }));

  it('should take the MAC of the interface holding the address towards the controller', () => {
    const interfaces = { lo: [iface('127.0.0.1', '255.0.0.0', { internal: true, mac: '00:00:00:00:00:00' })], eth0: [iface('10.0.0.12', '255.255.255.0', { mac: 'AA:BB:CC:00:11:22' })] };
    expect(macOfAddress('10.0.0.12', interfaces, sysfs)).to.equal('aa:bb:cc:00:11:22');
    expect(macOfAddress('10.9.9.9', interfaces, sysfs)).to.equal(undefined);
    expect(macOfAddress('127.0.0.1', interfaces, sysfs)).to.equal(undefined);
  });

  it('should take a bridge\'s physical port, the card that wakes the PC', () => {
    expect(physicalPortMac('br0', sysfs)).to.equal('00:1a:2b:3c:4d:5e');
    expect(macOfAddress('10.0.0.12', { br0: [iface('10.0.0.12', '255.255.255.0', { mac: '72:aa:aa:aa:aa:aa' })] }, sysfs)).to.equal('00:1a:2b:3c:4d:5e');
    expect(physicalPortMac('enp3s0', sysfs)).to.equal(undefined);
  });
});

describe('the wake-up schedule', () => {
  const rows: Array<[string, string]> = [
    ['weekdays 07:30', '30 7 * * 1-5'],
    ['daily 7:05', '5 7 * * *'],
    ['Weekends 09:00', '0 9 * * 0,6'],
    ['mon,wed,fri 07:45', '45 7 * * 1,3,5'],
    ['sunday 23:59', '59 23 * * 0'],
  ];
  for (const [text, cron] of rows) it(`should read "${text}" as ${cron}`, () => expect(scheduleToCron(text)).to.equal(cron));

  for (const bad of ['07:30', 'weekdays', 'weekdays 24:00', 'weekdays 7:60', 'funday 07:30', 'mo 07:30', '* * * * *']) {
    it(`should refuse "${bad}" naming the field`, () => {
      let fields: unknown;
      try {
        scheduleToCron(bad);
      } catch (err) {
        fields = (err as { status: number; details: { fields: unknown } }).details.fields;
        expect((err as { status: number }).status).to.equal(422);
      }
      expect(fields).to.be.an('array').with.nested.property('[0].field', 'schedule');
    });
  }
});
