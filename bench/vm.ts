// Group `vm`: a real VM requested through the controller on this machine's libvirt (TCG).
import { pendingGroup } from './group.ts';

export const vmGroup = pendingGroup('vm', [
  ['vm.request_to_running_ms', 'ms'],
  ['vm.request_to_console_ms', 'ms'],
  ['vm.overhead_ms', 'ms'],
], 'not measured yet: needs the controller and the real agent creating VMs through libvirt');
