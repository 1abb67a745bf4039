// Wake-on-LAN: the magic packet (6 x 0xFF, then the MAC 16 times) as a UDP broadcast to port 9, sent
// to the broadcast address of the subnet the host was last seen on (a routed subnet, or an address
// outside every subnet of the controller's: the limited broadcast 255.255.255.255).
import { createSocket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import os from 'node:os';
import { MAC_ADDRESS } from '../../wire/api.ts';

export const MAC_RE = MAC_ADDRESS;
export const WAKE_PORT = 9;
export const LIMITED_BROADCAST = '255.255.255.255';

/** The 102-byte magic packet for `mac` (aa:bb:cc:dd:ee:ff or aa-bb-...). */
export function magicPacket(mac: string): Buffer {
  if (!MAC_RE.test(mac)) throw new TypeError(`not a MAC address: ${mac}`);
  const bytes = Buffer.from(mac.replace(/[:-]/g, ''), 'hex');
  const packet = Buffer.alloc(102, 0xff);
  for (let i = 0; i < 16; i++) bytes.copy(packet, 6 + i * 6);
  return packet;
}

const toInt = (ip: string): number => ip.split('.').reduce((n, part) => (n << 8) | Number(part), 0) >>> 0;
const toIp = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

/**
 * The broadcast address of the controller's subnet that holds `address`, from the netmasks of this
 * machine's interfaces (the narrowest subnet wins); 255.255.255.255 when none holds it or it is not IPv4.
 * @example broadcastFor('10.0.0.12') // '10.0.0.255' on a controller at 10.0.0.5/24
 */
export function broadcastFor(address: string, interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): string {
  if (!isIPv4(address)) return LIMITED_BROADCAST;
  const target = toInt(address);
  let best: { mask: number; broadcast: number } | undefined;
  for (const addrs of Object.values(interfaces)) {
    for (const a of addrs ?? []) {
      if (a.family !== 'IPv4' || a.internal || !isIPv4(a.netmask)) continue;
      const mask = toInt(a.netmask);
      if (mask === 0xffffffff || ((toInt(a.address) & mask) >>> 0) !== ((target & mask) >>> 0)) continue;
      if (!best || mask > best.mask) best = { mask, broadcast: ((toInt(a.address) & mask) | ~mask) >>> 0 };
    }
  }
  return best ? toIp(best.broadcast) : LIMITED_BROADCAST;
}

/** The address part of an agent URL (`10.0.0.12` of `https://10.0.0.12:8081`); undefined when it is not a URL. */
export function addressOfUrl(url: string): string | undefined {
  try {
    return new URL(url).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return undefined; // stored URLs were checked at enrollment: the limited broadcast then
  }
}

/** Sends a magic packet; replaceable in tests that must not put packets on the machine's LAN. */
export type WakeSender = (mac: string, address: string, port: number) => Promise<void>;

/** Sends the magic packet for `mac` to `address` (default the limited broadcast) on UDP `port`. */
export function sendWake(mac: string, address = LIMITED_BROADCAST, port = WAKE_PORT): Promise<void> {
  const packet = magicPacket(mac);
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    socket.once('error', (err) => {
      socket.close();
      reject(err);
    });
    socket.bind(() => {
      socket.setBroadcast(true);
      socket.send(packet, port, address, (err) => {
        socket.close();
        if (err) reject(err);
        else resolve();
      });
    });
  });
}
