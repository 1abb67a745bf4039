// A small cache of values that are all valid for one version of what they were made from.

/**
 * Values kept until their `version` changes: the VM list's pages until any VM changes
 * (server/vms/list-pages.ts), who a token or cookie is until a user, session or token is written
 * (server/users/users.ts). Bounded: a flood of distinct keys cannot grow it past `max` entries (the
 * oldest goes first). A `make` that answers undefined (nothing found) is not kept.
 */
export class VersionedCache<V> {
  #version = '';
  readonly #entries = new Map<string, V>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  /** The value for `key` at `version`, made by `make` on a miss. */
  get(version: string, key: string, make: () => V): V {
    if (version !== this.#version) {
      this.#entries.clear();
      this.#version = version;
    }
    let value = this.#entries.get(key);
    if (value === undefined) {
      value = make();
      if (value !== undefined) {
        if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!);
        this.#entries.set(key, value);
      }
    }
    return value;
  }
}
