// The words the pages use for states and times: the one place where the API's states (kept as they
// are, docs/api.md) become what a teacher reads, and where every date gets its day.
//
//   VM (wire/vm.ts VmState)   creating → starting   running → running   paused → starting
//                             shutoff → stopped     error → error       deleting → deleting
//                             unknown → unknown     (rebooting, when a page knows it: rebooting)
//   host (HostState)          pending → waiting for approval   ready → ready   draining → no new VMs
//                             down → not answering             asleep → asleep

/** A state as the pages say it; the badge's CSS class stays the API's state. */
const STATE_WORDS: Record<string, string> = {
  // VMs. libvirt reports `paused` for a domain it is still starting; SkyHost never pauses a VM itself.
  creating: 'starting',
  paused: 'starting',
  running: 'running',
  rebooting: 'rebooting',
  shutoff: 'stopped',
  error: 'error',
  deleting: 'deleting',
  unknown: 'unknown',
  // hosts
  pending: 'waiting for approval',
  ready: 'ready',
  draining: 'no new VMs',
  down: 'not answering',
  asleep: 'asleep',
};

/**
 * The plain word for a VM's or host's state.
 * @example stateWord('shutoff') // 'stopped'
 */
export function stateWord(state: unknown): string {
  if (typeof state !== 'string') return '';
  return STATE_WORDS[state] ?? state;
}

/** Every API state the pages know a word for (tests check each has one). */
export const KNOWN_STATES: readonly string[] = Object.keys(STATE_WORDS);

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * An ISO time as the pages show it, in the controller's time zone, always with its day:
 * "Tue 2 Dec 14:05"; a time in another year than `now` adds the year ("Mon 30 Dec 2024 09:00").
 * `seconds` adds them ("Tue 2 Dec 14:05:07"), for the event log. '' for anything that is not a time.
 */
export function dayTime(v: unknown, opts: { seconds?: boolean; now?: Date } = {}): string {
  if (typeof v !== 'string' && !(v instanceof Date)) return '';
  const d = v instanceof Date ? v : new Date(v);
  if (!Number.isFinite(d.getTime())) return '';
  const two = (n: number) => String(n).padStart(2, '0');
  const year = d.getFullYear() !== (opts.now ?? new Date()).getFullYear() ? ` ${d.getFullYear()}` : '';
  const clock = `${two(d.getHours())}:${two(d.getMinutes())}${opts.seconds ? `:${two(d.getSeconds())}` : ''}`;
  return `${DAYS[d.getDay()]} ${d.getDate()} ${MONTHS[d.getMonth()]}${year} ${clock}`;
}

/** The Handlebars helpers of this module: `{{stateWord state}}`, `{{time t}}`, `{{timeSec t}}`. */
export const wordHelpers = {
  stateWord,
  time: (v: unknown) => dayTime(v),
  timeSec: (v: unknown) => dayTime(v, { seconds: true }),
};
