// axe-core in a playwright page, for keeping pages at WCAG 2 AA: its source comes from node_modules
// (no CDN), evaluated in the page, then run with the WCAG 2.0/2.1 A and AA rules only.
//
//   const found = await axeViolations(page);
//   expect(found, formatViolations(found)).to.deep.equal([]);
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Page } from 'playwright-core';

export const WCAG_AA_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];

export interface AxeViolation {
  id: string;
  impact: string;
  help: string;
  helpUrl: string;
  /** One entry per failing element: its CSS selector path and what axe says is wrong with it. */
  nodes: Array<{ target: string; summary: string }>;
}

let source: string | undefined;
function axeSource(): string {
  source ??= readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  return source;
}

/**
 * Runs axe on the page as it is now and returns the WCAG 2 A/AA violations (an empty list when it
 * passes). `needsReview` adds what axe could not decide (its "incomplete"), marked so, as failures too.
 */
export async function axeViolations(page: Page, opts: { exclude?: string[]; needsReview?: boolean } = {}): Promise<AxeViolation[]> {
  // Evaluated over the devtools protocol, so the page's Content-Security-Policy does not block it.
  if (!(await page.evaluate('typeof window.axe === "object"'))) await page.evaluate(axeSource());
  return page.evaluate(async ({ tags, exclude, needsReview }) => {
    type Result = Record<string, unknown> & { nodes: Array<{ target: unknown[]; failureSummary?: string; any?: Array<{ message: string }> }> };
    const axe = (globalThis as unknown as { axe: { run(ctx: unknown, o: unknown): Promise<{ violations: Result[]; incomplete: Result[] }> } }).axe;
    const result = await axe.run({ include: [['html']], exclude: exclude.map((s) => [s]) }, { runOnly: { type: 'tag', values: tags } });
    const shape = (v: Result, review: boolean) => ({
      id: String(v.id), impact: review ? `${String(v.impact)}, needs review` : String(v.impact), help: String(v.help), helpUrl: String(v.helpUrl),
      nodes: v.nodes.map((n) => ({
        target: n.target.map(String).join(' '),
        summary: (n.failureSummary ?? n.any?.map((c) => c.message).join('; ') ?? '').replace(/\s+/g, ' ').trim(),
      })),
    });
    return [...result.violations.map((v) => shape(v, false)), ...(needsReview ? result.incomplete.map((v) => shape(v, true)) : [])];
  }, { tags: WCAG_AA_TAGS, exclude: opts.exclude ?? [], needsReview: opts.needsReview ?? false });
}

/** The violations as readable lines: rule, impact, what to do, then each element's selector and reason. */
export function formatViolations(violations: AxeViolation[], where = ''): string {
  if (violations.length === 0) return `${where}: no WCAG 2 AA violations`;
  return [`${where}: ${violations.length} WCAG 2 AA rule(s) fail`, ...violations.flatMap((v) => [
    `  ${v.id} (${v.impact}): ${v.help} <${v.helpUrl}>`,
    ...v.nodes.slice(0, 10).map((n) => `    ${n.target}  -- ${n.summary}`),
    ...(v.nodes.length > 10 ? [`    ... and ${v.nodes.length - 10} more`] : []),
  ])].join('\n');
}
