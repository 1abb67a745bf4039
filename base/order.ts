// Orders for sorted lists. Not String.prototype.localeCompare: that collates through ICU, which maps
// ~1.7 MB of collation data into every process that calls it once (measured on the controller: its
// resident memory at 200 hosts is what docs/performance.md tracks) and costs several times a plain
// comparison on every sort of a 1,000-host list. Ids and ISO 8601 timestamps sort correctly by code
// units; names a person reads sort by their lower case first, so "Lab" and "lab" stay together.

/** Ascending by UTF-16 code units: ids, ISO 8601 timestamps, state names. The same on every machine. */
export function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Ascending as a reader expects a list of names: case ignored first, then by code units so the order is total. */
export function compareNames(a: string, b: string): number {
  return compareCodeUnits(a.toLowerCase(), b.toLowerCase()) || compareCodeUnits(a, b);
}
