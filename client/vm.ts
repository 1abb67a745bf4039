// What `skyhost vm list|create|start|stop|delete|ssh` do (client/commands.ts declares them): calls to
// the controller's JSON API (docs/api.md), answers printed as a table or JSON.
import { readFile } from 'node:fs/promises';
import { UsageError, type CommandContext } from '../base/cli.ts';
import { SkyError } from '../base/errors.ts';
import { runAttached } from '../base/exec.ts';
import { SshPublicKey, VmName, type VmRequest, type VmView } from '../wire/api.ts';
import { call, connect, type Connection } from './connect.ts';

/** Every VM the token may see (following `next` pages), with the filters given. */
export async function allVms(c: Connection, filters: Record<string, string> = {}): Promise<VmView[]> {
  const q = new URLSearchParams({ limit: '1000', ...filters });
  const out: VmView[] = [];
  for (let next: string | undefined = `/api/vms?${q}`; next;) {
    const page: { vms: VmView[]; next?: string } = await call(c, 'GET', next);
    out.push(...page.vms);
    next = page.next;
  }
  return out;
}

/** The one VM named `ref` (its id, else its name); a usage error when none or several match. */
export async function findVm(c: Connection, ref: string | undefined, command: string): Promise<VmView> {
  if (!ref) throw new UsageError(`${command}: give the VM's NAME or ID (see skyhost ${command} --help)`);
  const vms = await allVms(c);
  const byId = vms.find((v) => v.id === ref);
  if (byId) return byId;
  const named = vms.filter((v) => v.name === ref);
  if (named.length === 1) return named[0]!;
  if (named.length === 0) throw new SkyError(404, 'not_found', `no VM named or with id ${JSON.stringify(ref)} that you may see (skyhost vm list shows them)`);
  throw new UsageError(`${named.length} VMs are named ${ref}: give one of their ids (${named.map((v) => `${v.id} of ${v.owner}`).join(', ')})`);
}

/** `12 min`, `3 h 5 min`, `2 d 4 h`; `-` for none; `ended` for a time past. */
export function timeLeft(iso: string | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const min = Math.floor((Date.parse(iso) - now) / 60_000);
  if (Number.isNaN(min)) return '-';
  if (min < 0) return 'ended';
  if (min < 60) return `${min} min`;
  if (min < 24 * 60) return `${Math.floor(min / 60)} h ${min % 60} min`;
  return `${Math.floor(min / 1440)} d ${Math.floor((min % 1440) / 60)} h`;
}

/** Rows as columns padded to their widest cell. */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}

export async function listVms(ctx: CommandContext): Promise<void> {
  if (ctx.args.length > 0) throw new UsageError(`vm list takes no arguments (got ${ctx.args[0]})`);
  const c = await connect(ctx);
  const filters: Record<string, string> = {};
  if (typeof ctx.flags.owner === 'string') filters.owner = ctx.flags.owner;
  if (typeof ctx.flags.state === 'string') filters.state = ctx.flags.state;
  const vms = await allVms(c, filters);
  if (ctx.flags.json === true) {
    ctx.print(JSON.stringify(vms, null, 2));
    return;
  }
  if (vms.length === 0) {
    ctx.print('no VMs (make one: skyhost vm create --template T)');
    return;
  }
  const rows = vms.map((v) => [
    v.name, v.id, v.state, v.owner, v.hostname ?? v.host, v.template, String(v.vcpus), String(v.memoryMiB), timeLeft(v.expiresAt), v.ssh?.command ?? '-',
  ]);
  for (const l of table(['NAME', 'ID', 'STATE', 'OWNER', 'HOST', 'TEMPLATE', 'VCPUS', 'MIB', 'LEASE LEFT', 'SSH'], rows)) ctx.print(l);
}

/** A whole number flag within limits, or a usage error naming it. */
function wholeNumber(ctx: CommandContext, flag: string, min: number, max: number): number | undefined {
  const v = ctx.flags[flag];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`--${flag} must be a whole number from ${min} to ${max} (got ${String(v)})`);
  return Number(v);
}

/** The `POST /api/vms` body from the flags (the controller checks it again: a 422 names the field). */
export async function createRequest(ctx: CommandContext): Promise<VmRequest> {
  const template = ctx.flags.template;
  if (typeof template !== 'string' || !template) throw new UsageError('vm create: --template T is required (skyhost vm create --help)');
  if (ctx.args.length > 0) throw new UsageError(`vm create takes no arguments (got ${ctx.args[0]}; the name goes in --name)`);
  const name = ctx.flags.name;
  if (typeof name === 'string' && !VmName.safeParse(name).success) throw new UsageError(`--name ${VmName.safeParse(name).error!.issues[0]!.message}`);
  const req: VmRequest = { template };
  if (typeof name === 'string') req.name = name;
  const vcpus = wholeNumber(ctx, 'vcpus', 1, 64);
  const memory = wholeNumber(ctx, 'memory', 32, 262_144);
  const disk = wholeNumber(ctx, 'disk', 1, 4096);
  const lease = wholeNumber(ctx, 'lease', 1, 525_600);
  if (vcpus !== undefined) req.vcpus = vcpus;
  if (memory !== undefined) req.memoryMiB = memory;
  if (disk !== undefined) req.diskGiB = disk;
  if (lease !== undefined) req.leaseMinutes = lease;
  const keyFile = ctx.flags['ssh-key'];
  if (typeof keyFile === 'string') {
    const key = await readFile(keyFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`--ssh-key ${keyFile}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
    });
    const line = key.split('\n').map((l) => l.trim()).find((l) => l && !l.startsWith('#')) ?? '';
    if (!SshPublicKey.safeParse(line).success) throw new UsageError(`--ssh-key ${keyFile} is not an OpenSSH public key (give the .pub file, e.g. ~/.ssh/id_ed25519.pub)`);
    req.sshKey = line;
  }
  return req;
}

/** Polls the VM until it leaves `creating`; throws when it ends in `error` or time runs out. */
async function untilRunning(c: Connection, vm: VmView, timeoutMs: number, progress: (line: string) => void): Promise<VmView> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (vm.state === 'creating') {
    if (Date.now() > deadline) throw new SkyError(504, 'timeout', `VM ${vm.name} (${vm.id}) is still creating after ${Math.round(timeoutMs / 1000)} s (skyhost vm list shows it)`);
    if (vm.progress && vm.progress !== last) progress(`VM ${vm.name}: ${vm.progress}`);
    last = vm.progress ?? last;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    vm = await call<VmView>(c, 'GET', `/api/vms/${encodeURIComponent(vm.id)}`);
  }
  if (vm.state === 'error') throw new SkyError(502, 'vm_failed', `VM ${vm.name} (${vm.id}) failed: ${vm.error ?? 'no reason given'}`);
  return vm;
}

function describe(vm: VmView, c: Connection): string[] {
  return [
    `VM ${vm.name} (${vm.id}) on ${vm.hostname ?? vm.host}: ${vm.state}`,
    ...(vm.expiresAt ? [`lease ends ${vm.expiresAt} (${timeLeft(vm.expiresAt)} left)`] : []),
    ...(vm.ssh ? [`ssh: ${vm.ssh.command}`] : []),
    `console: skyhost vm console ${vm.name}, or ${c.url}${vm.consoleUrl}`,
  ];
}

export async function createVm(ctx: CommandContext): Promise<void> {
  const req = await createRequest(ctx);
  const timeoutS = wholeNumber(ctx, 'timeout', 1, 86_400) ?? 600;
  const c = await connect(ctx);
  let vm = await call<VmView>(c, 'POST', '/api/vms', req, 120_000);
  if (ctx.flags['no-wait'] !== true) vm = await untilRunning(c, vm, timeoutS * 1000, (l) => process.stderr.write(l + '\n'));
  if (ctx.flags.json === true) ctx.print(JSON.stringify(vm, null, 2));
  else for (const l of describe(vm, c)) ctx.print(l);
}

export async function vmAction(ctx: CommandContext, action: 'start' | 'shutdown' | 'poweroff'): Promise<void> {
  const command = action === 'start' ? 'vm start' : 'vm stop';
  if (ctx.args.length > 1) throw new UsageError(`${command}: give one VM (got ${ctx.args.length})`);
  const c = await connect(ctx);
  const vm = await findVm(c, ctx.args[0], command);
  // a shutdown waits for the guest (up to 60 s on the host)
  const after = await call<VmView>(c, 'POST', `/api/vms/${encodeURIComponent(vm.id)}/${action}`, {}, 120_000);
  if (ctx.flags.json === true) ctx.print(JSON.stringify(after, null, 2));
  else ctx.print(`VM ${after.name} (${after.id}): ${after.state}`);
}

export async function deleteVm(ctx: CommandContext): Promise<void> {
  if (ctx.args.length > 1) throw new UsageError(`vm delete: give one VM (got ${ctx.args.length})`);
  const c = await connect(ctx);
  const vm = await findVm(c, ctx.args[0], 'vm delete');
  await call(c, 'DELETE', `/api/vms/${encodeURIComponent(vm.id)}`, undefined, 120_000);
  ctx.print(`deleted VM ${vm.name} (${vm.id})`);
}

/** `ssh -p 22014 sky@10.0.0.12` as an argument array for ssh (words checked: no option smuggled in the host part). */
export function sshArguments(command: string): string[] {
  const words = command.trim().split(/\s+/);
  if (words[0] !== 'ssh' || words.length < 2 || !words.slice(1).every((w) => /^[A-Za-z0-9@._:\[\]=-]+$/.test(w)) || words.at(-1)!.startsWith('-')) {
    throw new SkyError(502, 'bad_ssh_command', `the controller gave an SSH command this client does not run: ${JSON.stringify(command.slice(0, 200))}`);
  }
  return words.slice(1);
}

export async function sshVm(ctx: CommandContext): Promise<number> {
  const [ref, ...extra] = ctx.args;
  const c = await connect(ctx);
  const vm = await findVm(c, ref, 'vm ssh');
  if (!vm.ssh) throw new SkyError(409, 'no_ssh', `VM ${vm.name} has no SSH access (${vm.state === 'running' ? 'its template offers none' : `it is ${vm.state}`}): use skyhost vm console ${vm.name}`);
  return runAttached('ssh', [...sshArguments(vm.ssh.command), ...extra]);
}
