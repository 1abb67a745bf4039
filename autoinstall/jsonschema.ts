// A small JSON-schema checker for the draft-07 subset Ubuntu's autoinstall schema uses. It refuses a
// schema that uses any other keyword, so a newer subiquity schema cannot be half-checked in silence.
export type JsonSchema = boolean | { [keyword: string]: unknown };

export interface SchemaProblem {
  /** JSON path of the value, e.g. ['identity', 'hostname'] */
  path: string[];
  message: string;
}

const SUPPORTED = new Set([
  'type', 'properties', 'required', 'additionalProperties', 'items', 'oneOf', 'anyOf', 'const', 'enum',
  'minimum', 'maximum', 'minLength', 'maxLength', 'pattern', 'format', 'description', 'deprecated', '$schema', 'title',
]);

/** Throws if `schema` uses a keyword this checker does not implement. */
export function assertSupported(schema: JsonSchema, where = '#'): void {
  if (typeof schema === 'boolean') return;
  for (const [kw, value] of Object.entries(schema)) {
    if (!SUPPORTED.has(kw)) throw new Error(`JSON schema keyword "${kw}" at ${where} is not supported`);
    if (kw === 'properties') {
      for (const [name, sub] of Object.entries(value as Record<string, JsonSchema>)) assertSupported(sub, `${where}/properties/${name}`);
    } else if (kw === 'items' || (kw === 'additionalProperties' && typeof value === 'object')) {
      assertSupported(value as JsonSchema, `${where}/${kw}`);
    } else if (kw === 'oneOf' || kw === 'anyOf') {
      (value as JsonSchema[]).forEach((sub, i) => assertSupported(sub, `${where}/${kw}/${i}`));
    }
  }
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function hasType(v: unknown, t: string): boolean {
  const actual = typeOf(v);
  return actual === t || (t === 'number' && actual === 'integer');
}

/** Every way `value` breaks `schema` (empty when it conforms). */
export function checkSchema(schema: JsonSchema, value: unknown, path: string[] = []): SchemaProblem[] {
  if (schema === true) return [];
  if (schema === false) return [{ path, message: 'is not allowed here' }];
  const s = schema as Record<string, unknown>;
  const out: SchemaProblem[] = [];
  const fail = (message: string) => out.push({ path, message });

  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
    if (!types.some((t) => hasType(value, t))) {
      fail(`must be ${types.join(' or ')} (got ${typeOf(value)})`);
      return out;
    }
  }
  if (s.const !== undefined && JSON.stringify(value) !== JSON.stringify(s.const)) fail(`must be ${JSON.stringify(s.const)}`);
  if (Array.isArray(s.enum) && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    fail(`must be one of ${s.enum.map((e) => JSON.stringify(e)).join(', ')}`);
  }
  if (typeof value === 'number') {
    if (typeof s.minimum === 'number' && value < s.minimum) fail(`must be at least ${s.minimum}`);
    if (typeof s.maximum === 'number' && value > s.maximum) fail(`must be at most ${s.maximum}`);
  }
  if (typeof value === 'string') {
    const length = [...value].length;
    if (typeof s.minLength === 'number' && length < s.minLength) fail(`must be at least ${s.minLength} characters`);
    if (typeof s.maxLength === 'number' && length > s.maxLength) fail(`must be at most ${s.maxLength} characters`);
    if (typeof s.pattern === 'string' && !new RegExp(s.pattern, 'u').test(value)) fail(`must match ${s.pattern}`);
    if (s.format === 'uri' && !isUri(value)) fail('must be a URI such as http://proxy.school:3128');
  }
  if (Array.isArray(value) && s.items !== undefined) {
    value.forEach((item, i) => out.push(...checkSchema(s.items as JsonSchema, item, [...path, String(i)])));
  }
  if (typeOf(value) === 'object') {
    const obj = value as Record<string, unknown>;
    const props = (s.properties ?? {}) as Record<string, JsonSchema>;
    for (const name of (s.required ?? []) as string[]) {
      if (!(name in obj)) out.push({ path: [...path, name], message: 'is required' });
    }
    for (const [name, v] of Object.entries(obj)) {
      if (name in props) out.push(...checkSchema(props[name]!, v, [...path, name]));
      else if (s.additionalProperties === false) out.push({ path: [...path, name], message: 'is not a known key here' });
      else if (typeof s.additionalProperties === 'object') out.push(...checkSchema(s.additionalProperties as JsonSchema, v, [...path, name]));
    }
  }
  if (Array.isArray(s.anyOf) && !s.anyOf.some((sub) => checkSchema(sub as JsonSchema, value, path).length === 0)) {
    fail('matches none of the allowed forms');
  }
  if (Array.isArray(s.oneOf)) {
    const matching = s.oneOf.filter((sub) => checkSchema(sub as JsonSchema, value, path).length === 0).length;
    if (matching !== 1) fail(matching === 0 ? 'matches none of the allowed forms' : 'matches more than one of the allowed forms');
  }
  return out;
}

function isUri(s: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$/.test(s) && URL.canParse(s);
}
