// Who may see and act on what, by role and class: the one set of rules every component asks
// (VM lists and actions, consoles, class sessions, quotas).
//
//   admin    every VM and every class
//   teacher  own VMs, and the VMs of their classes: owned by one of their students, or made for
//            one of their classes (vm.classId)
//   student  own VMs only
//
//   const access = services.access;              // classAccess(services.classes)
//   access.canActOnVm(user, vm);                 // vm: { owner, classId? } (a VmRecord fits)
//   access.classesOf(user);                      // the classes a user teaches or attends
//   access.teaches(teacher, 'anna');             // a user name; or a class: access.teaches(teacher, { id })
import type { User } from '../users/users.ts';
import type { ClassInfo, Classes } from './classes.ts';

/** The fields of a VM the rules read (a VmRecord or VmView fits). */
export interface VmAccessFacts {
  owner: string;
  classId?: string | null | undefined;
}

export interface ClassAccess {
  /** An admin: every class; a teacher: the classes they teach; a student: the classes they attend. */
  classesOf(user: User): ClassInfo[];
  /** The user names of a class's students (empty for an unknown class). */
  studentsOf(classId: string): string[];
  /** Whether `teacher` teaches a class (`{ id }`) or a student (a user name) of one of their classes; an admin teaches everyone. */
  teaches(teacher: User, userOrClass: string | { id: string }): boolean;
  /** Whether `user` may see and act on `vm` (start, stop, delete, open its console). */
  canActOnVm(user: User, vm: VmAccessFacts): boolean;
  /** Changes whenever classes or their members change (caches of per-user lists key on it). */
  version(): number;
}

/** The rules over a Classes service. */
export function classAccess(classes: Classes): ClassAccess {
  const teaches = (teacher: User, target: string | { id: string }): boolean => {
    if (teacher.role === 'admin') return true;
    if (teacher.role !== 'teacher') return false;
    const taught = classes.ofUser(teacher.name).teaching;
    if (typeof target !== 'string') return taught.has(target.id);
    for (const id of classes.ofUser(target).attending) if (taught.has(id)) return true;
    return false;
  };
  return {
    classesOf(user) {
      if (user.role === 'admin') return classes.list();
      const mine = classes.ofUser(user.name);
      const ids = user.role === 'teacher' ? mine.teaching : mine.attending;
      return classes.list().filter((c) => ids.has(c.id));
    },
    studentsOf: (classId) => [...(classes.get(classId)?.students ?? [])],
    teaches,
    canActOnVm(user, vm) {
      if (user.role === 'admin' || vm.owner === user.name) return true;
      if (user.role !== 'teacher') return false;
      if (vm.classId && classes.ofUser(user.name).teaching.has(vm.classId)) return true;
      return teaches(user, vm.owner);
    },
    version: () => classes.version,
  };
}
