// One configuration schema for every command. Precedence: flags > SKYHOST_* environment >
// config file (--config FILE, else /etc/skyhost/config.yaml) > defaults. Each layer is checked on its
// own so that an error can name where the bad value came from.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { LEVELS } from './log.ts';

export const DEFAULT_CONFIG_FILE = '/etc/skyhost/config.yaml';

const portSchema = z.number().int().min(1).max(65535);
const portRange = z
  .string()
  .regex(/^\d{1,5}-\d{1,5}$/, 'must look like 20000-20999')
  .refine((s) => {
    const [lo, hi] = s.split('-').map(Number) as [number, number];
    return lo >= 1024 && hi <= 65535 && lo <= hi;
  }, 'must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535');

/** Every key a config file, a SKYHOST_* variable or a flag may set. */
export const configShape = {
  dataDir: z.string().min(1),
  logLevel: z.enum(LEVELS),
  logFormat: z.enum(['json', 'pretty']).optional(),
  // controller
  port: portSchema,
  listen: z.string().min(1),
  publicUrl: z.url().optional(),
  schedulerPolicy: z.enum(['least-loaded', 'spread', 'binpack']),
  selfRegistration: z.boolean(),
  pollIntervalSeconds: z.number().int().min(1).max(3600),
  advertise: z.boolean(),
  /** HTTPS port for agents and for pages from the LAN (0: no HTTPS, plain HTTP for everyone as with trustedLan). */
  httpsPort: z.number().int().min(0).max(65535),
  /** HTTP serves LAN clients too (no redirect to HTTPS); agents may then enroll with http:// URLs. */
  trustedLan: z.boolean(),
  /** The school's own certificate and key (PEM files) for pages; agents still pin the controller's own. */
  tlsCertFile: z.string().min(1).optional(),
  tlsKeyFile: z.string().min(1).optional(),
  backupKeepDays: z.number().int().min(0).max(3650),
  // agent
  agentPort: portSchema,
  agentUrl: z.url().optional(),
  controllerUrl: z.url().optional(),
  /** A join token, or a join string `shk1.…` (wire/join.ts) that also carries the controller's addresses and fingerprint. */
  joinToken: z.string().min(8).max(2048).optional(),
  /** The controller's certificate fingerprint (sha256) when the join token is a bare one. */
  controllerFingerprint: z.string().regex(/^(sha256:)?[0-9A-Fa-f:]{64,95}$/, 'must be a sha256 fingerprint: 64 hex digits (colons allowed)').optional(),
  hostId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must be 1-64 letters, digits, ".", "_" or "-"').optional(),
  agentKey: z.string().min(16).max(256).optional(),
  sshPortRange: portRange,
  lanInterface: z.string().min(1).optional(),
  /** What the agent runs when the controller puts this PC to sleep (words split on spaces, no shell). */
  powerOffCommand: z.string().min(1).max(500),
  // bootstrapper
  setupPort: portSchema,
  ubuntuMirror: z.url(),
} as const;

export const configSchema = z.strictObject(configShape);
export type Config = z.infer<typeof configSchema>;
export type ConfigKey = keyof Config;
export const CONFIG_KEYS = Object.keys(configShape) as ConfigKey[];

export function defaults(opts: { isRoot: boolean; cwd: string }): Config {
  return {
    dataDir: opts.isRoot ? '/var/lib/skyhost' : path.join(opts.cwd, '.skyhost'),
    logLevel: 'info',
    port: 8080,
    listen: '0.0.0.0',
    schedulerPolicy: 'least-loaded',
    selfRegistration: false,
    pollIntervalSeconds: 5,
    advertise: true,
    httpsPort: 8443,
    trustedLan: false,
    backupKeepDays: 7,
    agentPort: 8081,
    sshPortRange: '20000-20999',
    powerOffCommand: 'systemctl poweroff',
    setupPort: 8090,
    ubuntuMirror: 'https://releases.ubuntu.com',
  };
}

/** A configuration value that is not allowed: the CLI prints `message` on one line and exits 2. */
export class ConfigError extends Error {
  readonly key: string;
  constructor(key: string, message: string) {
    super(message);
    this.name = 'ConfigError';
    this.key = key;
  }
}

/** `dataDir` -> `SKYHOST_DATA_DIR` */
export function envName(key: string): string {
  return 'SKYHOST_' + key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

export interface LoadOptions {
  /** Values from command-line flags, already mapped to config keys. */
  flags?: Partial<Record<ConfigKey, unknown>>;
  /** Which flag set each key, for error messages (`port` -> `--port`). */
  flagNames?: Partial<Record<ConfigKey, string>>;
  env?: NodeJS.ProcessEnv;
  /** An explicit --config FILE: it must exist. */
  configFile?: string;
  /** The file read when there is no --config; absent is fine. */
  defaultConfigFile?: string;
  isRoot?: boolean;
  cwd?: string;
}

export interface LoadedConfig {
  config: Config;
  /** The config file that was read, if any. */
  file?: string;
}

export function loadConfig(opts: LoadOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const isRoot = opts.isRoot ?? process.getuid?.() === 0;
  const cwd = opts.cwd ?? process.cwd();

  let file: string | undefined;
  let fromFile: Record<string, unknown> = {};
  const explicit = opts.configFile ?? env.SKYHOST_CONFIG;
  const candidate = explicit ?? opts.defaultConfigFile ?? DEFAULT_CONFIG_FILE;
  if (explicit || existsSync(candidate)) {
    file = candidate;
    fromFile = readConfigFile(candidate);
  }
  checkLayer(fromFile, (key) => `config key "${key}" in ${file}`);

  const fromEnv: Record<string, unknown> = {};
  for (const key of CONFIG_KEYS) {
    const raw = env[envName(key)];
    if (raw !== undefined && raw !== '') fromEnv[key] = coerceString(key, raw);
  }
  for (const name of Object.keys(env)) {
    if (name.startsWith('SKYHOST_') && name !== 'SKYHOST_CONFIG' && !CONFIG_KEYS.some((k) => envName(k) === name) &&
      !ENV_NOT_CONFIG.has(name)) {
      throw new ConfigError(name, `unknown environment variable ${name} (allowed: ${CONFIG_KEYS.map(envName).join(', ')})`);
    }
  }
  checkLayer(fromEnv, (key) => `environment variable ${envName(key)}`);

  const fromFlags: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(opts.flags ?? {})) {
    if (value !== undefined) fromFlags[key] = typeof value === 'string' ? coerceString(key as ConfigKey, value) : value;
  }
  checkLayer(fromFlags, (key) => `flag ${opts.flagNames?.[key as ConfigKey] ?? '--' + key}`);

  const merged = { ...defaults({ isRoot, cwd }), ...fromFile, ...fromEnv, ...fromFlags };
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ConfigError(String(issue.path[0]), `config key "${String(issue.path[0])}": ${issue.message}`);
  }
  const config = result.data;
  config.dataDir = path.resolve(cwd, config.dataDir);
  return file ? { config, file } : { config };
}

/** SKYHOST_* variables that are not configuration (test and build switches, and `skyhost vm`'s API token). */
const ENV_NOT_CONFIG = new Set(['SKYHOST_TEST_KEEP', 'SKYHOST_NO_SETUP', 'SKYHOST_ACCEL', 'SKYHOST_TOKEN']);

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('config', `cannot read config file ${file}: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (err) {
    throw new ConfigError('config', `config file ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError('config', `config file ${file} must be a mapping of keys to values`);
  }
  return data as Record<string, unknown>;
}

/** Checks one layer's keys and values, naming the source in the error. */
function checkLayer(layer: Record<string, unknown>, where: (key: string) => string): void {
  for (const [key, value] of Object.entries(layer)) {
    const schema = (configShape as Record<string, z.ZodType>)[key];
    if (!schema) {
      throw new ConfigError(key, `unknown ${where(key)} (allowed keys: ${CONFIG_KEYS.join(', ')})`);
    }
    const result = schema.safeParse(value);
    if (!result.success) {
      const got = typeof value === 'string' ? JSON.stringify(value) : String(value);
      throw new ConfigError(key, `${where(key)}: ${describe(key as ConfigKey, result.error.issues[0]?.message)} (got ${got})`);
    }
  }
}

/** What a key allows, in words a person can act on. */
function describe(key: ConfigKey, zodMessage = 'invalid'): string {
  const schema = configShape[key] as z.ZodType;
  const inner = schema instanceof z.ZodOptional ? (schema.unwrap() as z.ZodType) : schema;
  if (inner instanceof z.ZodEnum) return `must be one of ${(inner.options as string[]).join(', ')}`;
  if (inner instanceof z.ZodBoolean) return 'must be true or false';
  if (inner instanceof z.ZodNumber) {
    const { minValue, maxValue } = inner;
    return `must be a whole number from ${minValue} to ${maxValue}`;
  }
  return zodMessage.replace(/^Invalid input: /, '');
}

/** Environment and flag values arrive as strings: turn them into the key's type where that is clear. */
function coerceString(key: ConfigKey, raw: string): unknown {
  const schema = configShape[key] as z.ZodType;
  const inner = schema instanceof z.ZodOptional ? (schema.unwrap() as z.ZodType) : schema;
  if (inner instanceof z.ZodNumber) return /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw;
  if (inner instanceof z.ZodBoolean) {
    const v = raw.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(v)) return true;
    if (['0', 'false', 'no', 'off'].includes(v)) return false;
  }
  return raw;
}
