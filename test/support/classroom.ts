// A class for tests, made through the controller's own services: its teacher and students get
// accounts (where they have none yet), each with the password `password(name)`.
import type { ControllerServices } from '../../server/services.ts';

/** The password a test account made here has. */
export const password = (name: string) => `${name}-password-1`;

/** A class with its teacher and students (accounts made as needed), through the Classes service; returns its id. */
export async function makeClass(services: ControllerServices, name: string, teacher: string, students: string[]): Promise<string> {
  for (const [user, role] of [[teacher, 'teacher'], ...students.map((s) => [s, 'student'])] as Array<[string, 'teacher' | 'student']>) {
    if (!services.users.get(user)) await services.users.create({ name: user, password: password(user), role });
  }
  const cls = services.classes.create({ name, teachers: [teacher] }, 'admin');
  for (const s of students) services.classes.addMember(cls.id, s, 'student', 'admin');
  return cls.id;
}
