// Browsing the LAN for controllers (`_skyhost._tcp`, the contract in wire/mdns.ts) from the LAN
// address only, so that queries never go out of a VM bridge. Used by the agent (agent/discovery/) and
// by `skyhost vm` (client/) to find the controller.
import { Bonjour, type Browser } from 'bonjour-service';
import type { Logger } from '../base/log.ts';
import { parseAd, quietErrors, SERVICE_TYPE, type ControllerAd } from './mdns.ts';

export interface ControllerBrowser {
  /** The address it browses from. */
  readonly lanIp: string | undefined;
  /** When browsing started (ms since the epoch). */
  readonly since: number;
  /** Called when an advertisement comes, changes or goes. */
  onChange: (() => void) | undefined;
  /** Usable advertisements heard so far (a dead controller that sent no goodbye stays listed). */
  ads(): ControllerAd[];
  /** Asks the LAN again (`browser.update()`). */
  query(): void;
  stop(): Promise<void>;
}

/** Browses `_skyhost._tcp` from `lanIp` (multicast goes out of that interface only). */
export function browseControllers(opts: { lanIp?: string | undefined; log: Logger; onChange?: () => void }): ControllerBrowser {
  const bonjour = new Bonjour(
    (opts.lanIp ? { interface: opts.lanIp, bind: '0.0.0.0' } : {}) as object,
    (err: Error) => opts.log.debug('mDNS send failed', { err: err.message }),
  );
  quietErrors(bonjour, opts.log);
  const browser: Browser = bonjour.find({ type: SERVICE_TYPE });
  const warned = new Set<string>();
  const self: ControllerBrowser = {
    lanIp: opts.lanIp,
    since: Date.now(),
    onChange: opts.onChange,
    ads() {
      const out: ControllerAd[] = [];
      for (const s of browser.services) {
        const ad = parseAd(s);
        if ('invalid' in ad) {
          if (!warned.has(s.name)) opts.log.warn(`ignoring controller advertisement "${s.name}": ${ad.invalid}`);
          warned.add(s.name);
        } else out.push(ad);
      }
      return out;
    },
    query: () => browser.update(),
    stop: () =>
      new Promise<void>((resolve) => {
        browser.stop();
        bonjour.destroy(() => resolve());
        setTimeout(resolve, 500).unref(); // destroy() may never call back when the socket is already gone
      }),
  };
  const changed = () => self.onChange?.();
  browser.on('up', changed);
  browser.on('down', changed);
  browser.on('txt-update', changed);
  browser.on('srv-update', changed);
  return self;
}
