// Consoles. Serial: the hypervisor's serial line takes one connection at a time (libvirt: QEMU's unix
// socket, logged to a file); the agent holds that one connection and fans it out to every viewer over
// WebSocket, with a scrollback so a viewer who joins late sees the prompt. Graphical: VNC on 127.0.0.1, bridged
// WebSocket->TCP for noVNC. Both carry raw bytes, unframed.
//
// The serial WebSocket's binary frames are the line's bytes; its text frames are notices (JSON) about
// the line (docs/api.md#consoles): `{"history":N}` announces that the next binary frame is replayed
// history, `{"console":STATE}` says what the line is doing now:
//
//   connected ──line breaks, VM off──▶ stopped ──start──▶ reconnecting ──line up──▶ connected
//   connected ──line breaks, VM on───▶ reconnecting
//   connected ──reboot asked, or the guest's kernel says "reboot: Restarting system"──▶ rebooting
//   rebooting ──first output after the kernel's "reboot: ..." (or after a silence)──▶ connected
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Logger } from '../base/log.ts';
import type { PowerState, SerialLine } from './hypervisor/driver.ts';

export const SCROLLBACK_BYTES = 64 * 1024;
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;
/** A reboot whose guest never says so, nor prints again after a silence, is over after this long (3 min). */
const REBOOT_MAX_MS = 180_000;
/** Output after this much silence since a reboot was asked ends it (guests whose kernel does not announce the reset). */
const REBOOT_QUIET_MS = 5000;

/** What a serial console is doing, as its viewers are told. */
export type ConsoleState = 'connected' | 'rebooting' | 'reconnecting' | 'stopped';

// Linux's last words before a reset or power-off (printed at emergency level, so even with `quiet`).
const KERNEL_RESET = /reboot: (Restarting system|Power down)/;
const KERNEL_RESTART = /reboot: Restarting system/;

// Terminal queries whose answers a terminal types back: device status (ESC[5n, ESC[6n, ESC[?6n), device
// attributes (ESC[c, ESC[>c, ESC[=c), mode reports (ESC[?1$p), window reports (ESC[14t ...), colour
// queries (OSC 4/10/11/12 with "?") and setting requests (DCS $q). Replayed, they would type old answers
// into today's shell (`9;7R` -> `sh: 9: not found`).
const QUERIES = /\x1b\[[?]?\d*n|\x1b\[[>=]?\d*c|\x1b\[\??\d+\$p|\x1b\[(1[13-9]|2[01])t|\x1b\](4;\d+|1[0-2]);\?(\x07|\x1b\\)|\x1bP\$q[^\x1b\x07]*(\x07|\x1b\\)/g;

/** The history without the terminal queries in it: a replay shows what was printed and asks the terminal nothing. */
export function withoutQueries(history: Buffer): Buffer {
  const text = history.toString('latin1');
  const clean = text.replace(QUERIES, '');
  return clean.length === text.length ? history : Buffer.from(clean, 'latin1');
}

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
  /** A start was announced (`starting`) and its `poke` has not come yet: the line is not called stopped meanwhile. */
  private startAsked = false;
  private readonly powerState: (() => Promise<PowerState | undefined>) | undefined;
  private readonly rebootMaxMs: number;
  private lineState: ConsoleState = 'reconnecting';
  /** A reboot under way: when it began, whether the guest's kernel said it resets, its last output and the text since. */
  private reboot: { since: number; reset: boolean; lastOutput: number; tail: string } | undefined;

  /** `powerState` tells a stopped VM from a line that broke for another reason (when the line breaks). */
  constructor(line: SerialLine, log: Logger, history?: Buffer, powerState?: () => Promise<PowerState | undefined>, opts: { rebootMaxMs?: number } = {}) {
    this.line = line;
    this.rebootMaxMs = opts.rebootMaxMs ?? REBOOT_MAX_MS;
    this.log = log;
    this.powerState = powerState;
    if (history) this.remember(history);
  }

  get connected(): boolean {
    return this.socket !== undefined;
  }

  /** What the line is doing now, as viewers are told. */
  get state(): ConsoleState {
    return this.lineState;
  }

  /** A reboot is being asked for (call it first): viewers see `rebooting` until the guest prints again after its reset. */
  rebooting(): void {
    const reboot = this.reboot ??= { since: Date.now(), reset: false, lastOutput: Date.now(), tail: '' };
    this.setState('rebooting');
    // a guest that ignores the request and stays silent is not rebooting for ever
    setTimeout(() => {
      if (this.reboot === reboot && !this.stopped) this.rebooted();
    }, this.rebootMaxMs).unref();
  }

  /** The reboot was refused: the line is as it was. */
  rebootRefused(): void {
    if (this.reboot && !this.reboot.reset) this.rebooted();
  }

  private setState(state: ConsoleState): void {
    if (state === this.lineState) return;
    this.lineState = state;
    this.log.debug(`serial console ${state}`);
    const notice = JSON.stringify({ console: state });
    for (const v of this.viewers) if (v.readyState === v.OPEN) v.send(notice);
  }

  /**
   * Follows a reboot through the guest's output: its kernel's last words, then the first visible
   * output after them is the new boot. A guest that never says so is back at its first output after
   * a silence (or after REBOOT_MAX_MS).
   */
  private watchReboot(chunk: Buffer): void {
    const text = chunk.toString('latin1');
    const now = Date.now();
    let r = this.reboot;
    if (!r) {
      // a reboot from inside the guest (`reboot` typed in the console)
      if (this.lineState !== 'connected' || !KERNEL_RESTART.test(text)) return;
      r = this.reboot = { since: now, reset: false, lastOutput: now, tail: '' };
      this.setState('rebooting');
    }
    const quietFor = now - r.lastOutput;
    r.lastOutput = now;
    let after = text;
    if (!r.reset) {
      r.tail = (r.tail + text).slice(-512);
      const m = KERNEL_RESET.exec(r.tail);
      if (!m) {
        if (quietFor >= REBOOT_QUIET_MS || now - r.since >= this.rebootMaxMs) this.rebooted();
        return;
      }
      r.reset = true;
      after = r.tail.slice(m.index + m[0].length);
    }
    if (/\S/.test(after) || now - r.since >= this.rebootMaxMs) this.rebooted();
  }

  private rebooted(): void {
    this.reboot = undefined;
    this.setState(this.socket ? 'connected' : 'reconnecting');
  }

  /**
   * A start is being asked for (call it first, then `poke` once the hypervisor answered): viewers see
   * `reconnecting` at once. Otherwise a retry may reach the new QEMU before the start call returns, and
   * the console would go from stopped straight to connected, saying stopped while the VM starts.
   */
  starting(): void {
    if (this.stopped || this.socket) return;
    this.startAsked = true;
    if (this.lineState === 'stopped') this.setState('reconnecting');
  }

  /** Connects now (after a start or reboot) instead of waiting for the next retry. */
  poke(): void {
    this.startAsked = false;
    if (this.stopped || this.socket) return;
    // the VM was started: viewers see it at once, even when a retry is already on its way
    if (this.lineState === 'stopped') this.setState('reconnecting');
    this.retryMs = RETRY_MIN_MS;
    if (this.connecting) return;
    clearTimeout(this.timer);
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
      // a new QEMU (the VM was started, or restarted by its hypervisor) boots from the start
      this.reboot = undefined;
      this.setState('connected');
      s.on('data', (chunk: Buffer) => {
        this.remember(chunk);
        this.watchReboot(chunk);
        for (const v of this.viewers) if (v.readyState === v.OPEN) v.send(chunk, { binary: true });
      });
      // the line breaks when the VM stops; 'close' follows and schedules the reconnect
      s.on('error', (err) => this.log.debug('serial console connection broke', { err }));
      s.on('close', () => {
        if (this.socket !== s) return;
        this.socket = undefined;
        this.lineBroke();
        this.retry();
      });
    }, (err: unknown) => {
      // QEMU is gone (VM off) or not yet there: try again, slower each time
      this.connecting = false;
      this.log.debug('serial console not reachable yet', { err });
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      // the line broke before the hypervisor called the VM off: ask again until it says so
      if (this.lineState === 'reconnecting') this.lineBroke();
      this.retry();
    });
  }

  /** The line broke: the VM stopped (viewers see `stopped`) or something else happened (`reconnecting`). */
  private lineBroke(): void {
    if (this.stopped) return;
    if (!this.powerState) return this.setState('reconnecting');
    this.powerState().then((power) => {
      // a start meanwhile reconnected the line, or is under way: that state stands
      if (!this.socket && !this.stopped && !this.startAsked) this.setState(power === 'shutoff' || power === undefined ? 'stopped' : 'reconnecting');
    }, (err: unknown) => {
      this.log.debug('could not read the VM\'s power state after its console line broke', { err });
      if (!this.socket) this.setState('reconnecting');
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

  /**
   * Adds a viewer: it gets the scrollback at once (announced, and without terminal queries), the line's
   * state, then everything live; what it sends goes to the guest.
   */
  attach(ws: WebSocket): void {
    this.poke();
    if (this.scrollback.length > 0) {
      const history = withoutQueries(this.scrollback);
      ws.send(JSON.stringify({ history: history.length }));
      ws.send(history, { binary: true });
    }
    ws.send(JSON.stringify({ console: this.lineState }));
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
