// Wake-on-LAN: the magic packet (6 x 0xFF, then the MAC 16 times) as a UDP broadcast to port 9.
import { createSocket } from 'node:dgram';

export const MAC_RE = /^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$/i;

/** The 102-byte magic packet for `mac` (aa:bb:cc:dd:ee:ff or aa-bb-...). */
export function magicPacket(mac: string): Buffer {
  if (!MAC_RE.test(mac)) throw new TypeError(`not a MAC address: ${mac}`);
  const bytes = Buffer.from(mac.replace(/[:-]/g, ''), 'hex');
  const packet = Buffer.alloc(102, 0xff);
  for (let i = 0; i < 16; i++) bytes.copy(packet, 6 + i * 6);
  return packet;
}

/** Sends the magic packet for `mac` to `address` (default the limited broadcast) on UDP `port`. */
export function sendWake(mac: string, address = '255.255.255.255', port = 9): Promise<void> {
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
