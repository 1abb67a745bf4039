import pkg from '../package.json' with { type: 'json' };

/** The SkyHost version, from package.json (inlined into the single executable at build time). */
export const VERSION: string = pkg.version;
