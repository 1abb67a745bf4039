// Group `controller`: 200 simulated hosts, 2,000 VMs, 50 concurrent clients (autocannon, second process).
import { pendingGroup } from './group.ts';

export const controllerGroup = pendingGroup('controller', [
  ['controller.dashboard_p99_ms', 'ms'],
  ['controller.api_vms_p99_ms', 'ms'],
  ['controller.rss_mb', 'MB'],
], 'not measured yet: needs `skyhost controller` with enrollment');
