// Reproducible tie-breaks: equal scores are ordered by a hash of (request seed, host id), so the same
// request on the same cluster always picks the same host ("to aid in postmortem debugging"), while
// different requests spread over equal hosts instead of always taking the first.
import type { PlacementRequest } from './index.ts';

/** FNV-1a (32-bit) of `text`, continuing from `hash`. */
export function fnv1a(text: string, hash = 0x811c9dc5): number {
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** The seed of one decision: the request's key and shape, plus the caller's seed. */
export function requestSeed(request: PlacementRequest, seed: number | string): number {
  const shape = `${request.key ?? ''}|${request.template}|${request.vcpus}|${request.memoryMiB}|${request.diskGiB}|${seed}`;
  return fnv1a(shape);
}

/** A host's place among equals for this seed (lower wins). */
export function hostTieKey(seed: number, hostId: string): number {
  // Finish with a murmur3-style mix so that ids differing in one character land far apart.
  let h = fnv1a(hostId, seed);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}
