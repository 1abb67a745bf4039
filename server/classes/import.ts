// Students in bulk: the rows of a CSV (name, optional display name) or of a pattern ("7b-" × 30 →
// 7b-01 … 7b-30), checked row by row. Pure: what exists already is asked through `exists`.
//
//   const rows = parseStudentCsv('name,display name\nanna,Anna Berg\n<b>x</b>\n');
//   const { good, rejected } = checkStudentRows(rows, (n) => users.get(n) !== undefined);
//   // good: [{ line: 2, name: 'anna', displayName: 'Anna Berg' }]
//   // rejected: [{ line: 3, name: '<b>x</b>', reason: 'contains markup (< or >)' }]
import { InvalidField } from '../../base/errors.ts';
import { DisplayName, UserName } from '../users/users.ts';

/** Rows one import may hold (a school class is ~30; a whole year fits). */
export const MAX_ROWS = 500;
/** Characters a pasted or uploaded CSV may have. */
export const MAX_CSV_CHARS = 200_000;

/** A row as read: its line in the file (1-based), the name, and what else it said. */
export interface StudentRow {
  line: number;
  name: string;
  displayName?: string;
  /** Set when the row is bad whatever the rest says (empty, too many columns). */
  problem?: string;
}

export interface RejectedRow {
  line: number;
  name: string;
  reason: string;
}

/** A good row: a valid name, new, once in the file. */
export interface GoodRow {
  line: number;
  name: string;
  displayName?: string;
}

/** The separator of a CSV: the one of `,`, `;` and tab that the first line uses most (spreadsheets in many languages write `;`). */
function separatorOf(firstLine: string): string {
  let best = ',';
  let most = 0;
  for (const sep of [',', ';', '\t']) {
    const n = firstLine.split(sep).length - 1;
    if (n > most) [best, most] = [sep, n];
  }
  return best;
}

/** The cells of one line: quoted cells may hold the separator and `""` for a quote. */
function cellsOf(line: string, sep: string): string[] {
  const cells: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (ch === '"') {
        quoted = false;
      } else {
        cur += ch;
      }
    } else if (ch === '"' && cur.trim() === '') {
      quoted = true;
      cur = '';
    } else if (ch === sep) {
      cells.push(cur.trim());
      cur = '';
    } else {
      cur += ch;
    }
  }
  cells.push(cur.trim());
  return cells;
}

const HEADER_NAMES = new Set(['name', 'username', 'user', 'user name', 'login']);

/**
 * Reads a CSV of students: one per line, the name first, then an optional display name; a first
 * line naming the columns (name, username, login…) is skipped. Lines with nothing on them are kept
 * as rows with a problem (except at the very end), so the list of rejects says where they were.
 * Names are lowercased (Anna and anna are one account).
 */
export function parseStudentCsv(text: string): StudentRow[] {
  if (text.length > MAX_CSV_CHARS) throw new InvalidField('csv', `too long: at most ${MAX_CSV_CHARS} characters`);
  const lines = text.replace(/^\uFEFF/, '').split(/\r\n|\r|\n/);
  while (lines.length > 0 && lines.at(-1)!.trim() === '') lines.pop();
  const first = lines.findIndex((l) => l.trim() !== '');
  if (first < 0) return [];
  const sep = separatorOf(lines[first]!);
  const rows: StudentRow[] = [];
  lines.forEach((raw, i) => {
    const line = i + 1;
    const cells = cellsOf(raw, sep);
    while (cells.length > 1 && cells.at(-1) === '') cells.pop(); // trailing empty columns of a spreadsheet
    if (i === first && HEADER_NAMES.has(cells[0]!.toLowerCase())) return;
    if (cells.every((c) => c === '')) {
      rows.push({ line, name: '', problem: 'empty line' });
      return;
    }
    const row: StudentRow = { line, name: cells[0]!.toLowerCase() };
    if (cells[1]) row.displayName = cells[1];
    if (cells.length > 2) row.problem = `${cells.length} columns: expected a name and an optional display name`;
    rows.push(row);
  });
  if (rows.filter((r) => r.problem !== 'empty line').length > MAX_ROWS) throw new InvalidField('csv', `more than ${MAX_ROWS} students: import them in parts`);
  return rows;
}

/**
 * The rows of a pattern: `prefix` followed by `start` … `start + count - 1`, zero-padded to the
 * same width (at least 2): `patternRows('7b-', 30)` → 7b-01 … 7b-30.
 */
export function patternRows(prefix: string, count: number, start = 1): StudentRow[] {
  if (!Number.isInteger(count) || count < 1 || count > MAX_ROWS) throw new InvalidField('count', `must be a whole number from 1 to ${MAX_ROWS}`);
  if (!Number.isInteger(start) || start < 0 || start > 99_999) throw new InvalidField('start', 'must be a whole number from 0 to 99999');
  const p = prefix.trim().toLowerCase();
  if (p === '') throw new InvalidField('prefix', 'give the start of the names, e.g. 7b-');
  const width = Math.max(2, String(start + count - 1).length);
  const last = `${p}${String(start + count - 1).padStart(width, '0')}`;
  const bad = nameProblem(last);
  if (bad) throw new InvalidField('prefix', `the names would be like "${last}": ${bad}`);
  return Array.from({ length: count }, (_, i) => ({ line: i + 1, name: `${p}${String(start + i).padStart(width, '0')}` }));
}

/** Why a name cannot be a user name, or undefined when it can. */
export function nameProblem(name: string): string | undefined {
  if (/[<>]/.test(name)) return 'contains markup (< or >)';
  if (name.length > 32) return `too long: at most 32 characters (it has ${name.length})`;
  if (!UserName.safeParse(name).success) return 'not a valid user name: use lowercase letters, digits, ".", "_" or "-", starting with a letter or digit';
  return undefined;
}

/**
 * Sorts rows into good ones and rejected ones with a reason: empty lines, invalid names or display
 * names, a name twice in the file (the later ones), a name that `exists` already.
 */
export function checkStudentRows(rows: StudentRow[], exists: (name: string) => boolean): { good: GoodRow[]; rejected: RejectedRow[] } {
  const good: GoodRow[] = [];
  const rejected: RejectedRow[] = [];
  const seen = new Map<string, number>();
  for (const row of rows) {
    const reject = (reason: string) => rejected.push({ line: row.line, name: row.name, reason });
    if (row.problem) {
      reject(row.problem);
      continue;
    }
    const bad = nameProblem(row.name);
    if (bad) {
      reject(bad);
      continue;
    }
    const earlier = seen.get(row.name);
    if (earlier !== undefined) {
      reject(`the same name as line ${earlier}`);
      continue;
    }
    seen.set(row.name, row.line);
    if (exists(row.name)) {
      reject('a user with this name already exists');
      continue;
    }
    if (row.displayName !== undefined) {
      const d = DisplayName.safeParse(row.displayName);
      if (!d.success) {
        reject(`display name ${d.error.issues[0]?.message ?? 'not allowed'}`);
        continue;
      }
      good.push({ line: row.line, name: row.name, displayName: d.data });
    } else {
      good.push({ line: row.line, name: row.name });
    }
  }
  return { good, rejected };
}
