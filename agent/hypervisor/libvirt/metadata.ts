// SkyHost's record of a VM (VmMetadata) in the domain's <metadata>, under SkyHost's own namespace:
// one child element per field, read back whatever prefix libvirt gives the namespace.
import type { VmMetadata } from '../driver.ts';
import { unxml, xml } from './xml.ts';

export const METADATA_NS = 'https://skyhost.dev/xmlns/vm/1';
const PREFIX = 'skyhost';

const FIELDS: (keyof VmMetadata)[] = [
  'hostId', 'dataDir', 'id', 'name', 'owner', 'template', 'vcpus', 'memoryMiB', 'diskGiB', 'mac', 'ip', 'sshPort',
  'sshUser', 'console', 'network', 'createdAt', 'expiresAt',
];
const NUMBER_FIELDS = new Set<keyof VmMetadata>(['vcpus', 'memoryMiB', 'diskGiB', 'sshPort']);
const REQUIRED = ['hostId', 'id', 'name', 'template', 'mac', 'ip', 'network'] as const;

/** The metadata element. */
export function metadataXml(m: VmMetadata): string {
  const children = FIELDS.filter((k) => m[k] !== undefined).map((k) => `<${PREFIX}:${k}>${xml(m[k] as string | number)}</${PREFIX}:${k}>`);
  return `<${PREFIX}:vm xmlns:${PREFIX}="${METADATA_NS}">${children.join('')}</${PREFIX}:vm>`;
}

/** Reads the metadata back (as written by metadataXml, with any prefix); undefined if a key field is missing. */
export function parseMetadata(text: string): VmMetadata | undefined {
  const out: Record<string, string | number> = {};
  for (const k of FIELDS) {
    const m = new RegExp(`<(?:[A-Za-z_][\\w.-]*:)?${k}>([^<]*)</(?:[A-Za-z_][\\w.-]*:)?${k}>`).exec(text);
    if (m) out[k] = NUMBER_FIELDS.has(k) ? Number(m[1]) : unxml(m[1]!);
  }
  for (const k of REQUIRED) if (typeof out[k] !== 'string') return undefined;
  return out as unknown as VmMetadata;
}
