// The autoinstall model: options in, validated user-data and installer files out.
export { installerOptionsSchema, parseInstallerOptions, installerWarnings, effectivePrefix, ROLES, RELEASES } from './options.ts';
export type { InstallerOptions, InstallerOptionsInput, Role, Release } from './options.ts';
export { buildAutoinstall, renderUserData, renderMetaData } from './render.ts';
export { validateAutoinstall, validateUserData, autoinstallProblems, KNOWN_SECTIONS } from './validate.ts';
export type { AutoinstallProblem } from './validate.ts';
export { isoFiles, ISO_BINARY_PATH } from './files.ts';
export { serviceUnit, unitName } from './units.ts';
export { renderConfigFile, skyhostConfig } from './config-file.ts';
export { hashPassword } from './password.ts';
