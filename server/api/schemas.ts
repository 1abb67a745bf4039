// Request bodies of the JSON API that are not VMs' (those are in server/vms/schemas.ts).
import { z } from 'zod';
import { Password, Role, UserName } from '../users/users.ts';

export const LoginRequest = z.strictObject({ username: z.string().min(1).max(64), password: z.string().min(1).max(256) });
export const RegisterRequest = z.strictObject({ username: UserName, password: Password });
export const PasswordChange = z.strictObject({
  /** Required unless the user must change a one-time password they just signed in with. */
  currentPassword: z.string().max(256).optional(),
  newPassword: Password,
});
export const UserCreate = z.strictObject({ username: UserName, password: Password, role: Role.default('user') });
export const UserUpdate = z.strictObject({ role: Role.optional(), password: Password.optional() });
export const TokenCreate = z.strictObject({ label: z.string().min(1).max(100).regex(/^[^\u0000-\u001f]*$/, 'must be printable') });
export const Settings = z.strictObject({ selfRegistration: z.boolean() });
export const WakeRequest = z.strictObject({ mac: z.string().max(32).optional() });
export const JoinTokenCreate = z.strictObject({
  ttlMinutes: z.number().int().min(1).max(30 * 24 * 60).optional(),
  label: z.string().max(100).optional(),
});
export const JoinTokenRevoke = z.strictObject({ reason: z.string().min(1).max(200) });
export const AgentEvents = z.strictObject({
  events: z.array(z.object({
    time: z.string().max(40).optional(),
    level: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
    component: z.string().max(64).optional(),
    msg: z.string().max(2000),
    vmId: z.string().max(64).optional(),
  }).loose()).max(500),
});
