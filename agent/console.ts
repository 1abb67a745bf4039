// Consoles. Serial: the hypervisor's serial line takes one connection at a time (libvirt: QEMU's unix
// socket, logged to a file); the agent holds that one connection and fans it out to every viewer over
// WebSocket, with a scrollback so a viewer who joins late sees the prompt. Graphical: VNC on 127.0.0.1, bridged
// WebSocket->TCP for noVNC. Both carry raw bytes, unframed.
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Logger } from '../base/log.ts';
import type { SerialLine } from './hypervisor/driver.ts';

export const SCROLLBACK_BYTES = 64 * 1024;
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;

/** One VM's serial line: the agent's single connection to the guest's serial port, shared by every viewer. */
export class SerialBridge {
  private readonly line: SerialLine;
  private readonly log: Logger;
  private socket: Duplex | undefined;
  private connecting = false;
  private readonly viewers = new Set<WebSocket>();
  private scrollback: Buffer = Buffer.alloc(0);
  private retryMs = RETRY_MIN_MS;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(line: SerialLine, log: Logger, history?: Buffer) {
    this.line = line;
    this.log = log;
    if (history) this.remember(history);
  }

  get connected(): boolean {
    return this.socket !== undefined;
  }

  /** Connects now (after a start or reboot) instead of waiting for the next retry. */
  poke(): void {
    if (this.stopped || this.socket || this.connecting) return;
    clearTimeout(this.timer);
    this.retryMs = RETRY_MIN_MS;
    this.connect();
  }

  private connect(): void {
    if (this.stopped || this.socket || this.connecting) return;
    this.connecting = true;
    this.line.connect().then((s) => {
      this.connecting = false;
      if (this.stopped) {
        s.destroy();
        return;
      }
      this.socket = s;
      this.retryMs = RETRY_MIN_MS;
      this.log.debug('serial console connected');
      s.on('data', (chunk: Buffer) => {
        this.remember(chunk);
        for (const v of this.viewers) if (v.readyState === v.OPEN) v.send(chunk, { binary: true });
      });
      // the line breaks when the VM stops; 'close' follows and schedules the reconnect
      s.on('error', (err) => this.log.debug('serial console connection broke', { err }));
      s.on('close', () => {
        if (this.socket === s) this.socket = undefined;
        this.retry();
      });
    }, (err: unknown) => {
      // QEMU is gone (VM off) or not yet there: try again, slower each time
      this.connecting = false;
      this.log.debug('serial console not reachable yet', { err });
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      this.retry();
    });
  }

  private retry(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.retryMs);
    this.timer.unref();
  }

  private remember(chunk: Buffer): void {
    this.scrollback = Buffer.concat([this.scrollback, chunk]);
    if (this.scrollback.length > SCROLLBACK_BYTES) this.scrollback = this.scrollback.subarray(this.scrollback.length - SCROLLBACK_BYTES);
  }

  /** Adds a viewer: it gets the scrollback at once, then everything live; what it sends goes to the guest. */
  attach(ws: WebSocket): void {
    this.poke();
    if (this.scrollback.length > 0) ws.send(this.scrollback, { binary: true });
    this.viewers.add(ws);
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer);
      this.socket?.write(buf);
    });
    ws.on('close', () => this.viewers.delete(ws));
    ws.on('error', () => this.viewers.delete(ws));
  }

  viewerCount(): number {
    return this.viewers.size;
  }

  /** Drops the connection and every viewer (VM deleted, agent stopping). */
  stop(closeViewers = true): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.destroy();
    this.socket = undefined;
    if (closeViewers) for (const v of this.viewers) v.close(1001, 'console closed');
    this.viewers.clear();
  }
}

/** Bridges a WebSocket to the VM's VNC server on 127.0.0.1:port (RFB bytes both ways). */
export function bridgeVnc(ws: WebSocket, port: number): void {
  const tcp = connect({ host: '127.0.0.1', port });
  const end = () => {
    tcp.destroy();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close();
  };
  tcp.on('data', (chunk: Buffer) => {
    if (ws.readyState === ws.OPEN) ws.send(chunk, { binary: true });
  });
  tcp.on('error', end).on('close', end);
  ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
    tcp.write(Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer));
  });
  ws.on('close', end).on('error', end);
}
