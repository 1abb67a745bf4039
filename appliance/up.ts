// What `skyhost up` runs: the controller (server/serve.ts) with the local agent (agent/service.ts) in
// the same process, enrolled at once with the cluster join token. The roof puts the two together;
// neither imports the other.
import os from 'node:os';
import type { CommandContext } from '../base/cli.ts';
import { logger } from '../base/log.ts';
import { VERSION } from '../base/version.ts';
import { startAgent, type RunningAgent } from '../agent/service.ts';
import type { RunningController } from '../server/controller.ts';
import { serveController } from '../server/serve.ts';

/** Starts the local agent next to the controller and enrolls it. */
async function startLocalAgent(ctx: CommandContext, controller: RunningController): Promise<RunningAgent> {
  const agent = await startAgent({ config: ctx.config, log: logger('agent') });
  const everywhere = ctx.config.listen === '0.0.0.0' || ctx.config.listen === '::';
  const answer = controller.services.hosts.enroll({
    hostId: agent.hostId,
    hostname: os.hostname().slice(0, 253) || 'localhost',
    // The controller reaches its own agent over loopback; SSH commands still carry the LAN address.
    agentUrl: everywhere ? `http://127.0.0.1:${agent.port}` : agent.url,
    agentKey: agent.key,
    certFingerprint: agent.fingerprint,
    joinToken: controller.services.joinTokens.clusterToken(),
    version: VERSION,
  });
  controller.services.events.localHostId = agent.hostId; // its log lines name no host: they are this one's
  ctx.log.info(`local agent ${agent.hostId} enrolled (${answer.state})`, { hostId: agent.hostId });
  await controller.services.hosts.pollAll();
  return agent;
}

export function serveUp(ctx: CommandContext): Promise<number> {
  return serveController(ctx, { companion: startLocalAgent, companionName: 'local agent' });
}
