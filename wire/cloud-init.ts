// A VM request's `userData`: extra cloud-init #cloud-config (YAML) merged into the VM's seed. The one
// check of it, so the controller refuses at its edge exactly what an agent would refuse.
import { parse as parseYaml } from 'yaml';
import { InvalidField } from '../base/errors.ts';

type Read = { ok: true; config: Record<string, unknown> } | { ok: false; problem: string };

function readUserData(text: string | undefined): Read {
  if (!text || !text.trim()) return { ok: true, config: {} };
  let data: unknown;
  try {
    data = parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, problem: `is not valid YAML: ${(err as Error).message.split('\n')[0]}` };
  }
  if (data === null || data === undefined) return { ok: true, config: {} };
  if (typeof data !== 'object' || Array.isArray(data)) return { ok: false, problem: 'must be a #cloud-config mapping' };
  return { ok: true, config: data as Record<string, unknown> };
}

/** What is wrong with `text` as #cloud-config user-data, or undefined when it is fine (empty is fine). */
export function userDataProblem(text: string | undefined): string | undefined {
  const r = readUserData(text);
  return r.ok ? undefined : r.problem;
}

/**
 * Parses the request's user-data; a YAML that is not a mapping is a 422 on `userData`.
 * @example parseUserData('#cloud-config\npackages: [git]') // { packages: ['git'] }
 */
export function parseUserData(text: string | undefined): Record<string, unknown> {
  const r = readUserData(text);
  if (!r.ok) throw new InvalidField('userData', r.problem);
  return r.config;
}
