// `locale`, `keyboard`, `timezone`: how the installed PC speaks, types and tells time.
import { z } from 'zod';
import type { InstallerOptions } from '../options.ts';

export const localeSchema = z.string();
export const keyboardSchema = z.strictObject({ layout: z.string(), variant: z.string().optional() });
export const timezoneSchema = z.string();

export function emitLocale(o: InstallerOptions): string {
  return o.locale;
}

export function emitKeyboard(o: InstallerOptions): z.infer<typeof keyboardSchema> {
  return { layout: o.keyboardLayout, ...(o.keyboardVariant ? { variant: o.keyboardVariant } : {}) };
}

export function emitTimezone(o: InstallerOptions): string {
  return o.timezone;
}
