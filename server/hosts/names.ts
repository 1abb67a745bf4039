// What a host is called on every page, event, filter and "no host fits" reason: the name an admin
// gave it (hosts.display_name), else its hostname; and when two hosts would read the same (PCs
// cloned from one image share a hostname), each gets a short part of its host id:
//
//   lab-pc, lab-pc        →  lab-pc (3f2a), lab-pc (9c01)
//   lab-pc renamed "PC 7" →  PC 7, lab-pc
import { z } from 'zod';
import { InvalidField } from '../../base/errors.ts';
import type { Store } from '../db/store.ts';
import type { HostRegistry } from './registry.ts';

/** A name an admin gives a host: what the pages show instead of its hostname. */
export const DisplayName = z.string().trim().max(64, 'must be at most 64 characters')
  .regex(/^[^\x00-\x1f\x7f]*$/, 'must not contain control characters');

/** `PUT /api/hosts/:id/name`: a name, or null (or "") to show the hostname again. */
export const HostRename = z.strictObject({ name: DisplayName.nullable() });

interface Named {
  id: string;
  hostname: string;
  displayName?: string | undefined;
}

/**
 * The label of each host: its display name or hostname, with a short id suffix where two would read alike.
 * @example hostLabels([{ id: '3f2a9b', hostname: 'lab-pc' }, { id: '9c01d4', hostname: 'lab-pc' }]) // 3f2a9b → 'lab-pc (3f2a)', …
 */
export function hostLabels(hosts: readonly Named[]): Map<string, string> {
  const groups = new Map<string, Named[]>();
  for (const h of hosts) {
    const key = (h.displayName || h.hostname).toLowerCase();
    groups.set(key, [...(groups.get(key) ?? []), h]);
  }
  const out = new Map<string, string>();
  for (const group of groups.values()) {
    if (group.length === 1) {
      out.set(group[0]!.id, group[0]!.displayName || group[0]!.hostname);
      continue;
    }
    const ids = group.map((h) => h.id.replace(/[^A-Za-z0-9]/g, '').toLowerCase() || h.id);
    let n = 4;
    while (n < Math.max(...ids.map((i) => i.length)) && new Set(ids.map((i) => i.slice(0, n))).size < ids.length) n++;
    group.forEach((h, i) => out.set(h.id, `${h.displayName || h.hostname} (${ids[i]!.slice(0, n)})`));
  }
  return out;
}

/** The display names (hosts.display_name) and labels of a registry's hosts. Get it with `hostNames(services)`. */
export class HostNames {
  readonly #store: Store;
  readonly #registry: HostRegistry;
  readonly #given = new Map<string, string>();
  /** The labels as last worked out; dropped when a host enrolls, changes its record or is removed, or is renamed. */
  #labels: Map<string, string> | undefined;

  constructor(store: Store, registry: HostRegistry) {
    this.#store = store;
    this.#registry = registry;
    for (const r of store.all<{ id: string; display_name: string | null }>('SELECT id, display_name FROM hosts WHERE display_name IS NOT NULL')) {
      if (r.display_name) this.#given.set(String(r.id), String(r.display_name));
    }
    // A hostname changes only as its host enrolls again ('enrolled'), so these events are every change a label can see.
    registry.on('enrolled', () => (this.#labels = undefined));
    registry.on('removed', () => (this.#labels = undefined));
  }

  /** The name an admin gave the host, if any. */
  displayName(id: string): string | undefined {
    return this.#given.get(id);
  }

  /** Every host's label by id (worked out again when a host comes, goes, changes its hostname or is renamed). */
  labels(): Map<string, string> {
    if (this.#labels) return this.#labels;
    const records = this.#registry.records();
    this.#labels = hostLabels(records.map((h) => ({ id: h.id, hostname: h.hostname, displayName: this.#given.get(h.id) })));
    return this.#labels;
  }

  /** The host's label; an id no host has any more stays as it is. */
  label(id: string): string {
    return this.labels().get(id) ?? id;
  }

  /** Gives the host a name for the pages (`undefined` or '': its hostname again). 404 for an unknown host. */
  rename(id: string, name: string | null | undefined): string | undefined {
    this.#registry.require(id);
    const parsed = DisplayName.safeParse(name ?? '');
    if (!parsed.success) throw new InvalidField('name', parsed.error.issues[0]?.message ?? 'is not a name');
    const value = parsed.data || undefined;
    this.#store.run('UPDATE hosts SET display_name = ? WHERE id = ?', value ?? null, id);
    if (value) this.#given.set(id, value);
    else this.#given.delete(id);
    this.#labels = undefined;
    return value;
  }
}

const named = new WeakMap<HostRegistry, HostNames>();

/** The one HostNames of these services (made at first use). */
export function hostNames(services: { store: Store; hosts: HostRegistry }): HostNames {
  let n = named.get(services.hosts);
  if (!n) named.set(services.hosts, n = new HostNames(services.store, services.hosts));
  return n;
}
