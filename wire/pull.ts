// Pulling a template from other machines: where from (sources), what to fetch (the manifest), and how far along a pull is.
// A source is the controller's catalog or a peer agent, each a base URL under which `files/FILE` answers HTTP Range requests.
import { z } from 'zod';
import { TemplateInfo } from './template.ts';

/** A template's file name in a manifest: one path component, never hidden (no `/`, no leading dot). */
export const TemplateFileName = z.string().regex(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$/, 'must be one file name of letters, digits, ".", "_" or "-"');

/**
 * Where a template's files can be read: `${url}/files/FILE` answers GET with Range. e.g.
 * `{ url: 'http://10.0.0.2:8080/api/templates/debian-12', authorization: 'Bearer ...' }` (the controller)
 * or `{ url: 'http://10.0.0.12:8081/templates/debian-12', authorization: 'Ticket ...' }` (a peer agent).
 */
export const PullSource = z.strictObject({
  url: z.url({ protocol: /^https?$/ }),
  /** The Authorization header's value sent to this source. */
  authorization: z.string().max(4096).optional(),
  /** sha256 of the source's TLS certificate (an https:// source): nothing is sent to a server without it (base/tls.ts). */
  fingerprint: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits').optional(),
});
export type PullSource = z.infer<typeof PullSource>;

/** `POST /templates/pull` on an agent: fetch the template of `manifest` from `sources`, in their order. */
export const PullRequest = z.strictObject({
  manifest: TemplateInfo.extend({ files: z.array(TemplateInfo.shape.files.element.extend({ file: TemplateFileName, bytes: z.number().int().min(0) })).min(1).max(8) }),
  sources: z.array(PullSource).min(1).max(16),
});
export type PullRequest = z.infer<typeof PullRequest>;

/** How far along one pull is (`GET /templates/pulls/:name`, and `/status` `pulls`). */
export const PullProgress = z.object({
  name: z.string(),
  state: z.enum(['pulling', 'done', 'failed']),
  doneBytes: z.number().int(),
  totalBytes: z.number().int(),
  /** Why it failed (state `failed`). */
  error: z.string().optional(),
  /** The error's code, e.g. `checksum_mismatch`, `pull_failed`. */
  code: z.string().optional(),
});
export type PullProgress = z.infer<typeof PullProgress>;
