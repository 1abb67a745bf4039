// The admin password as the installer wants it: a SHA-512 crypt hash. `openssl passwd -6` reads the
// password on stdin (never on a command line, where `ps` would show it).
import { InvalidField } from '../base/errors.ts';
import { run } from '../base/exec.ts';

/**
 * `$6$...` for `plain`, ready for `adminPasswordHash`.
 * @example await hashPassword('correct horse') // '$6$Wq1...$...'
 */
export async function hashPassword(plain: string): Promise<string> {
  if (plain.length < 8 || plain.length > 128) throw new InvalidField('adminPassword', 'must be 8 to 128 characters');
  if (/[\r\n\0]/.test(plain)) throw new InvalidField('adminPassword', 'must not contain line breaks');
  const { stdout } = await run('openssl', ['passwd', '-6', '-stdin'], { input: plain + '\n' });
  return stdout.trim();
}
