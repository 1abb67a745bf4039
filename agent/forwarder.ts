// SSH from the LAN: a small TCP forwarder in the agent, hostIP:PORT -> guestIP:22, with PORT taken
// from the configured range (`sshPortRange`). No firewall rules are changed.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Unavailable } from '../base/errors.ts';

export interface PortRange {
  low: number;
  high: number;
}

export function parsePortRange(text: string): PortRange {
  const [low, high] = text.split('-').map(Number) as [number, number];
  return { low, high };
}

interface Forward {
  server: Server;
  sockets: Set<Socket>;
  target: { host: string; port: number };
}

/** What the VM manager needs of SSH forwards (the simulated agent books ports without listening). */
export type SshForwarder = Pick<PortForwarder, 'reserve' | 'release' | 'open' | 'close' | 'closeAll'>;

export class PortForwarder {
  private readonly range: PortRange;
  private readonly listenHost: string;
  private readonly forwards = new Map<number, Forward>();
  /** Ports promised to a VM being created but not yet listening. */
  private readonly reserved = new Set<number>();

  constructor(range: PortRange, listenHost = '0.0.0.0') {
    this.range = range;
    this.listenHost = listenHost;
  }

  /** Ports in use by this forwarder (listening or reserved). */
  ports(): number[] {
    return [...this.forwards.keys(), ...this.reserved];
  }

  /** Reserves the lowest free port of the range that is not in `taken` (synchronously, so bursts do not clash). */
  reserve(taken: Set<number> = new Set()): number {
    for (let p = this.range.low; p <= this.range.high; p++) {
      if (!this.forwards.has(p) && !this.reserved.has(p) && !taken.has(p)) {
        this.reserved.add(p);
        return p;
      }
    }
    throw new Unavailable(`no free SSH port left in ${this.range.low}-${this.range.high}`);
  }

  release(port: number): void {
    this.reserved.delete(port);
  }

  /** Listens on `port` and forwards every connection to target:targetPort. */
  async open(port: number, targetHost: string, targetPort = 22): Promise<void> {
    await this.close(port);
    const sockets = new Set<Socket>();
    const server = createServer((client) => {
      const upstream = connect({ host: targetHost, port: targetPort });
      sockets.add(client).add(upstream);
      const end = () => {
        client.destroy();
        upstream.destroy();
        sockets.delete(client);
        sockets.delete(upstream);
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'EADDRINUSE' ? new Unavailable(`SSH port ${port} is in use by another program`, { port }, 'port_in_use') : err));
      server.listen(port, this.listenHost, () => resolve());
    });
    this.reserved.delete(port);
    this.forwards.set(port, { server, sockets, target: { host: targetHost, port: targetPort } });
  }

  /** Stops forwarding `port` and drops its connections; an unknown port is fine. */
  async close(port: number): Promise<void> {
    this.reserved.delete(port);
    const f = this.forwards.get(port);
    if (!f) return;
    this.forwards.delete(port);
    for (const s of f.sockets) s.destroy();
    await new Promise<void>((resolve) => f.server.close(() => resolve()));
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.forwards.keys()].map((p) => this.close(p)));
  }
}
