// Validation of an autoinstall config: Ubuntu's own schema (subiquity 24.04, vendored in schema/),
// then a strict pass that rejects unknown top-level keys, which the schema allows: a typo such as
// `late-command` would otherwise be ignored by the installer without a word.
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { SkyError } from '../base/errors.ts';
import { assertSupported, checkSchema, type JsonSchema } from './jsonschema.ts';

import ubuntuSchema from './schema/autoinstall-schema.json' with { type: 'json' };

export const AUTOINSTALL_SCHEMA = ubuntuSchema as unknown as { properties: Record<string, JsonSchema> } & Record<string, unknown>;
assertSupported(AUTOINSTALL_SCHEMA as JsonSchema);

/** The top-level keys Ubuntu's installer knows. */
export const KNOWN_SECTIONS: ReadonlySet<string> = new Set(Object.keys(AUTOINSTALL_SCHEMA.properties));

export interface AutoinstallProblem {
  /** The top-level section, e.g. `identity` (`(document)` for the whole thing). */
  section: string;
  /** The key inside it, dotted, e.g. `hostname` or `0`; empty when the section itself is wrong. */
  key: string;
  message: string;
}

/**
 * What the 22.04 installer does not know (the vendored schema is 24.04's; 22.04's lacks these sections,
 * see schema/autoinstall-schema.SOURCE.txt, and these keys arrived with 23.x/24.04).
 */
export const NOT_ON_2204 = {
  sections: ['active-directory', 'codecs', 'interactive-sections', 'oem', 'source', 'ubuntu-pro'],
  keys: [['storage', 'layout', 'sizing-policy'], ['apt', 'fallback']],
} as const;

/** Every problem of an autoinstall section (the value under `autoinstall:`), or [] if it is valid. */
export function autoinstallProblems(doc: unknown, release: '22.04' | '24.04' = '24.04'): AutoinstallProblem[] {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    return [{ section: '(document)', key: '', message: 'the autoinstall section must be a mapping' }];
  }
  const problems: AutoinstallProblem[] = checkSchema(AUTOINSTALL_SCHEMA as JsonSchema, doc).map((p) => ({
    section: p.path[0] ?? '(document)',
    key: p.path.slice(1).join('.'),
    message: p.message,
  }));
  if (release === '22.04') {
    const d = doc as Record<string, unknown>;
    for (const section of NOT_ON_2204.sections) {
      if (section in d) problems.push({ section, key: '', message: 'is not known to the Ubuntu 22.04 installer' });
    }
    for (const [section, ...rest] of NOT_ON_2204.keys) {
      let v: unknown = d[section];
      for (const k of rest.slice(0, -1)) v = (v as Record<string, unknown> | undefined)?.[k];
      if (v && typeof v === 'object' && rest.at(-1)! in v) {
        problems.push({ section, key: rest.join('.'), message: 'is not known to the Ubuntu 22.04 installer (24.04 and later only)' });
      }
    }
  }
  for (const section of Object.keys(doc)) {
    if (!KNOWN_SECTIONS.has(section)) {
      const near = nearest(section, [...KNOWN_SECTIONS]);
      problems.push({ section, key: '', message: `is not an autoinstall section${near ? ` (did you mean "${near}"?)` : ''}` });
    }
  }
  return problems;
}

/** Throws a 422 SkyError naming the first problem's section and key; `details.problems` lists all. */
export function validateAutoinstall(doc: unknown, release: '22.04' | '24.04' = '24.04'): void {
  const problems = autoinstallProblems(doc, release);
  if (problems.length === 0) return;
  const first = problems[0]!;
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : '';
  throw new SkyError(422, 'invalid_autoinstall', `autoinstall section "${first.section}"${first.key ? `, key "${first.key}"` : ''} ${first.message}${more}`, {
    problems,
  });
}

/** Parses user-data text (`#cloud-config` with an `autoinstall:` mapping) and validates it; returns the section. */
export function validateUserData(text: string, release: '22.04' | '24.04' = '24.04'): Record<string, unknown> {
  if (!text.startsWith('#cloud-config\n')) {
    throw new SkyError(422, 'invalid_autoinstall', 'user-data must start with the line "#cloud-config"');
  }
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (e) {
    throw new SkyError(422, 'invalid_autoinstall', `user-data is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  const auto = (data as Record<string, unknown> | null)?.autoinstall;
  if (auto === undefined) throw new SkyError(422, 'invalid_autoinstall', 'user-data has no "autoinstall:" section');
  validateAutoinstall(auto, release);
  return auto as Record<string, unknown>;
}

/** validateUserData() on a file. */
export function validateUserDataFile(file: string): Record<string, unknown> {
  return validateUserData(readFileSync(file, 'utf8'));
}

/** The known name closest to `name` when it is a likely typo (edit distance <= 2). */
function nearest(name: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
