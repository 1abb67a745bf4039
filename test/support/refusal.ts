import { SkyError } from '../../base/errors.ts';

/** The SkyError `fn` throws (to check its status, code and fields); fails when it throws nothing, rethrows any other error. */
export function refusal(fn: () => unknown): SkyError {
  try {
    fn();
  } catch (err) {
    if (err instanceof SkyError) return err;
    throw err;
  }
  throw new Error('expected a refusal');
}
