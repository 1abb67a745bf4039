// What `skyhost controller` runs: the controller and its mDNS advertisement until SIGINT/SIGTERM.
// `skyhost up` (appliance/up.ts) runs the same with the local agent as a companion. Loaded only when
// one of them runs, so other commands never load the controller.
import type { CommandContext } from '../base/cli.ts';
import { untilSignal } from '../base/http.ts';
import { logger } from '../base/log.ts';
import { lanAddress } from '../base/net.ts';
import { STOP_LIMIT_MS, startController, type RunningController } from './controller.ts';
import { advertisedUrl, startAdvertising, type Advertisement } from './discovery.ts';
import { servicesOptions } from './services.ts';
import { loadSchoolCertificate } from './tls.ts';
import { isLoopback, showFingerprint } from '../base/tls.ts';
import { ConfigError } from '../base/config.ts';

/** Something that runs beside the controller and stops after it (the local agent of `skyhost up`). */
export interface Companion {
  stop(): Promise<void>;
}

export interface ServeOptions {
  /** Started once the controller listens; a failure is logged and the controller runs on alone. */
  companion?: (ctx: CommandContext, controller: RunningController) => Promise<Companion>;
  /** What the companion is called in the log line when it fails to start. */
  companionName?: string;
}

export async function serveController(cli: CommandContext, opts: ServeOptions = {}): Promise<number> {
  const ctx = { ...cli, log: logger('controller') };
  const { config } = ctx;
  if ((config.tlsCertFile === undefined) !== (config.tlsKeyFile === undefined)) {
    throw new ConfigError('tlsCertFile', 'config keys "tlsCertFile" and "tlsKeyFile": give both (the school\'s certificate and its key) or neither');
  }
  const school = config.tlsCertFile && config.tlsKeyFile ? loadSchoolCertificate(config.tlsCertFile, config.tlsKeyFile) : undefined;
  const controller = await startController({
    ...servicesOptions(config, ctx.log), port: config.port, listen: config.listen, publicUrl: config.publicUrl, lanInterface: config.lanInterface,
    // Listening on loopback only, nothing crosses the LAN: no HTTPS then (as for an agent).
    ...(config.httpsPort > 0 && !isLoopback(config.listen) && config.listen !== 'localhost' ? { https: { port: config.httpsPort, school } } : {}),
    trustedLan: config.trustedLan,
  });
  ctx.log.info(`controller listening on http://${config.listen}:${controller.port}` +
    (controller.httpsPort ? ` and https://${config.listen}:${controller.httpsPort} (certificate sha256 ${showFingerprint(controller.fingerprint)})` : ''),
  { dataDir: config.dataDir, fingerprint: controller.fingerprint, trustedLan: config.trustedLan });
  let companion: Companion | undefined;
  let ad: Advertisement | undefined;
  try {
    if (opts.companion) {
      try {
        companion = await opts.companion(ctx, controller);
      } catch (err) {
        ctx.log.error(`the ${opts.companionName ?? 'companion'} did not start, running the controller only: ${(err as Error).message}`);
      }
    }
    if (config.advertise) {
      const lanIp = lanAddress(config.lanInterface)?.ip;
      // Agents are sent to HTTPS (with the fingerprint as a hint in TXT): the HTTP port would redirect them.
      const secure = controller.httpsPort !== undefined;
      const url = advertisedUrl({ publicUrl: config.publicUrl, port: controller.httpsPort ?? controller.port, lanIp, scheme: secure ? 'https' : 'http' });
      if (url) {
        ad = startAdvertising({
          clusterId: controller.services.clusterId, url, port: controller.httpsPort ?? controller.port, lanIp, log: ctx.log, handleSignals: false,
          ...(secure ? { fingerprint: controller.fingerprint, pagePort: controller.port } : {}),
        });
      }
      else ctx.log.warn('no LAN address found: not advertising on mDNS (agents need --controller URL)');
    }
    const sig = await untilSignal();
    ctx.log.info(`stopping on ${sig}`);
    // Whatever still waits (a companion, a socket, the disk), the process ends STOP_LIMIT_MS after the signal.
    setTimeout(() => {
      ctx.log.error(`not stopped ${STOP_LIMIT_MS} ms after ${sig}: exiting now`);
      process.exit(1);
    }, STOP_LIMIT_MS).unref();
  } finally {
    await ad?.stop();
    await controller.stop();
    await companion?.stop();
  }
  return 0;
}
