// Group `discovery`: agent process start to host `ready` on the controller, across network namespaces.
import { pendingGroup } from './group.ts';

export const discoveryGroup = pendingGroup('discovery', [
  ['discovery.enroll_ms', 'ms'],
], 'not measured yet: needs mDNS discovery and enrollment between agent and controller');
