// `skyhost vm console NAME|ID`: this terminal on the VM's serial console, through the controller's
// WebSocket (`/api/vms/:id/console`, docs/api.md). The terminal is raw while attached (every key goes
// to the VM, Ctrl-C too); Ctrl-] leaves, as in telnet. Without a terminal (a script), stdin is sent
// as it comes, and Ctrl-] in it leaves too.
import WebSocket from 'ws';
import { UsageError, type CommandContext } from '../base/cli.ts';
import { SkyError } from '../base/errors.ts';
import { errorOf } from '../base/http-client.ts';
import { connect, socketAgent, tokenFile } from './connect.ts';
import { findVm } from './vm.ts';

/** Ctrl-]: leaves the console. */
const ESCAPE = 0x1d;

export async function attachConsole(ctx: CommandContext): Promise<number> {
  if (ctx.args.length > 1) throw new UsageError(`vm console: give one VM (got ${ctx.args.length})`);
  const c = await connect(ctx);
  const vm = await findVm(c, ctx.args[0], 'vm console');
  if (vm.console === 'vnc') throw new SkyError(409, 'graphical_console', `VM ${vm.name} has a graphical console: open ${c.url}${vm.consoleUrl} in a browser`);
  if (vm.state !== 'running') throw new SkyError(409, 'not_running', `VM ${vm.name} is ${vm.state}: start it first (skyhost vm start ${vm.name})`);
  const wsUrl = `${c.url.replace(/^http/, 'ws')}/api/vms/${encodeURIComponent(vm.id)}/console`;
  const agent = socketAgent(c);
  const ws = new WebSocket(wsUrl, { headers: { authorization: `Bearer ${c.token}` }, handshakeTimeout: 15_000, perMessageDeflate: false, ...(agent ? { agent } : {}) });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        let message = `the console answered ${res.statusCode}`;
        try {
          message = errorOf(JSON.parse(Buffer.concat(chunks).toString('utf8')))?.message ?? message;
        } catch {
          // not JSON: the status says it
        }
        const status = res.statusCode ?? 502;
        reject(new SkyError(status, 'console_refused', `controller ${c.url}: ${message}${status === 401 ? ` (the token comes from --token, SKYHOST_TOKEN or ${tokenFile()})` : ''}`));
      });
    });
    ws.once('error', (err) => reject(new SkyError(502, 'console_unreachable', `controller ${c.url}: the console could not be opened: ${err.message}`)));
  });

  const stdin = process.stdin;
  const tty = stdin.isTTY === true;
  process.stderr.write(`connected to the serial console of ${vm.name} (Ctrl-] leaves)\r\n`);
  if (tty) stdin.setRawMode(true);
  return new Promise<number>((resolve) => {
    let done = false;
    let lineState: string | undefined;
    const finish = (code: number, why: string) => {
      if (done) return;
      done = true;
      stdin.off('data', onInput);
      stdin.off('end', onEnd);
      if (tty) stdin.setRawMode(false);
      // a read stdin keeps the process alive: let go of it (the command ends here)
      stdin.destroy();
      process.stderr.write(`\r\n${why}\r\n`);
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
        ws.close(1000);
        // the other side's close frame is not worth waiting for
        setTimeout(() => ws.terminate(), 1000).unref();
      }
      resolve(code);
    };
    const onInput = (data: Buffer) => {
      const at = data.indexOf(ESCAPE);
      const part = at >= 0 ? data.subarray(0, at) : data;
      if (part.length > 0 && ws.readyState === WebSocket.OPEN) ws.send(part, { binary: true });
      if (at >= 0) finish(0, `left the console of ${vm.name} (it keeps running)`);
    };
    // a script's stdin ended: stay until the VM's side closes or Ctrl-] came
    const onEnd = () => ctx.log.debug('stdin ended; the console stays open until it closes');
    stdin.on('data', onInput);
    stdin.on('end', onEnd);
    stdin.resume();
    ws.on('message', (data: WebSocket.RawData, binary: boolean) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (binary) {
        process.stdout.write(bytes);
        return;
      }
      // text frames are notices about the line (agent/console.ts): say when it stops, reboots or reconnects
      let notice: { console?: unknown };
      try {
        notice = JSON.parse(bytes.toString('utf8')) as { console?: unknown };
      } catch {
        ctx.log.debug('console notice that is not JSON', { text: bytes.toString('utf8').slice(0, 200) });
        return;
      }
      if (typeof notice.console === 'string' && notice.console !== lineState) {
        if (lineState !== undefined || notice.console !== 'connected') process.stderr.write(`\r\n[console ${notice.console}]\r\n`);
        lineState = notice.console;
      }
    });
    ws.on('close', (code) => finish(code === 1000 || code === 1005 ? 0 : 1, `the console of ${vm.name} closed${code !== 1000 && code !== 1005 ? ` (${code})` : ''}`));
    ws.on('error', (err) => finish(1, `the console of ${vm.name} broke: ${err.message}`));
  });
}
