// Group `agent`: the real agent under the controller's polling (every 2 s). Owner: the agent engineer.
import { pendingGroup } from './group.ts';

export const agentGroup = pendingGroup('agent', [
  ['agent.status_p50_ms', 'ms'],
  ['agent.idle_rss_mb', 'MB'],
  ['agent.idle_cpu_pct', '%'],
], 'not measured yet: needs the agent (`skyhost agent`) to be built; this group file is for its owner to fill in');
