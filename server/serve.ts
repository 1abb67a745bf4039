// What `skyhost controller` and `skyhost up` run (docs/design.md#cli): the controller, its mDNS advertisement
// and, for `up`, the local agent in the same process, enrolled at once with the cluster join token.
// Loaded only when one of them runs (server/commands.ts), so other commands never load the controller.
import os from 'node:os';
import type { CommandContext } from '../base/cli.ts';
import { untilSignal } from '../base/http.ts';
import { logger } from '../base/log.ts';
import { VERSION } from '../base/version.ts';
import { lanAddress } from '../base/net.ts';
import { startAgent, type RunningAgent } from '../agent/service.ts';
import { startController, type RunningController } from './controller.ts';
import { advertisedUrl, startAdvertising, type Advertisement } from './discovery.ts';
import { servicesOptions } from './services.ts';

/** Starts the local agent next to the controller and enrolls it (`skyhost up`). */
async function startLocalAgent(ctx: CommandContext, controller: RunningController): Promise<RunningAgent> {
  const agent = await startAgent({ config: ctx.config, log: logger('agent') });
  const everywhere = ctx.config.listen === '0.0.0.0' || ctx.config.listen === '::';
  const answer = controller.services.hosts.enroll({
    hostId: agent.hostId,
    hostname: os.hostname().slice(0, 253) || 'localhost',
    // The controller reaches its own agent over loopback; SSH commands still carry the LAN address.
    agentUrl: everywhere ? `http://127.0.0.1:${agent.port}` : agent.url,
    agentKey: agent.key,
    joinToken: controller.services.joinTokens.clusterToken(),
    version: VERSION,
  });
  ctx.log.info(`local agent ${agent.hostId} enrolled (${answer.state})`, { hostId: agent.hostId });
  await controller.services.hosts.pollAll();
  return agent;
}

export async function serveController(cli: CommandContext, withAgent: boolean): Promise<number> {
  const ctx = { ...cli, log: logger('controller') };
  const { config } = ctx;
  const controller = await startController({ ...servicesOptions(config, ctx.log), port: config.port, listen: config.listen, publicUrl: config.publicUrl });
  ctx.log.info(`controller listening on http://${config.listen}:${controller.port}`, { dataDir: config.dataDir });
  let agent: RunningAgent | undefined;
  let ad: Advertisement | undefined;
  try {
    if (withAgent) {
      try {
        agent = await startLocalAgent(ctx, controller);
      } catch (err) {
        ctx.log.error(`the local agent did not start, running the controller only: ${(err as Error).message}`);
      }
    }
    if (config.advertise) {
      const lanIp = lanAddress(config.lanInterface)?.ip;
      const url = advertisedUrl({ publicUrl: config.publicUrl, port: controller.port, lanIp });
      if (url) ad = startAdvertising({ clusterId: controller.services.clusterId, url, port: controller.port, lanIp, log: ctx.log, handleSignals: false });
      else ctx.log.warn('no LAN address found: not advertising on mDNS (agents need --controller URL)');
    }
    const sig = await untilSignal();
    ctx.log.info(`stopping on ${sig}`);
  } finally {
    await ad?.stop();
    await controller.stop();
    await agent?.stop();
  }
  return 0;
}
