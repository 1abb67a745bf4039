// The second way to join (docs/design.md#installer-iso-and-installed-pc): a PC that already runs Ubuntu or Debian joins the cluster with
//   curl -fsSL http://controller:8080/install.sh | sudo sh
// GET /install.sh answers a POSIX sh script with this controller's URL and (from `?token=`, when the
// controller accepts it) a join token; GET /download/skyhost answers the executable itself.
// Over HTTPS the page's command pins the controller's public key (`curl -k --pinnedpubkey`), the
// script does the same for its download, and the token it leaves is the join string (wire/join.ts):
// the agent then talks to no controller but this one.
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { Router, type Request } from 'express';
import { BadRequest, Unavailable } from '../base/errors.ts';
import { skyhostExecutable } from '../base/executable.ts';
import { HOST_PACKAGES } from '../base/packages.ts';
import type { SshAccess } from '../wire/api.ts';

// ---- the address hosts and people use ----
// Whatever address the admin's browser used (often http://localhost:8080 on the controller's own
// PC), every command, link and script the controller hands out carries the address lab PCs reach it
// at: config `publicUrl`, else the LAN address it advertises over mDNS (base/net.ts), else the
// specific address it listens on. Only with none of these does a loopback request's own address go out.

/** Where lab PCs and students reach this controller, and where that came from. */
export interface ControllerAddress {
  /** e.g. `http://10.0.0.5:8080`; undefined when the controller knows no address but loopback. */
  url: string | undefined;
  source: 'config' | 'lan' | 'listen' | 'none';
}

/**
 * The controller's address for the LAN, from its configuration and its LAN address.
 * @example controllerAddress({ listen: '0.0.0.0', port: 8080, lanIp: '10.0.0.5' }) // { url: 'http://10.0.0.5:8080', source: 'lan' }
 */
export function controllerAddress(o: { publicUrl?: string | undefined; listen: string; port: number; lanIp?: string | undefined }): ControllerAddress {
  if (o.publicUrl) return { url: o.publicUrl.replace(/\/+$/, ''), source: 'config' };
  const everywhere = o.listen === '0.0.0.0' || o.listen === '::';
  const host = everywhere ? o.lanIp : isLoopbackHost(o.listen) ? undefined : o.listen;
  if (!host) return { url: undefined, source: 'none' };
  return { url: `http://${host.includes(':') ? `[${host}]` : host}:${o.port}`, source: everywhere ? 'lan' : 'listen' };
}

/** Whether a host name or address (as in a URL or a Host header) is this machine's own: localhost, 127.x, ::1, 0.0.0.0. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || /^127\./.test(h) || h === '::1' || h === '0.0.0.0' || h === '::' || h.startsWith('::ffff:127.');
}

/** Whether a URL's host is this machine's own (see isLoopbackHost); a malformed URL is not. */
export function isLoopbackUrl(url: string): boolean {
  try {
    return isLoopbackHost(new URL(url).hostname);
  } catch {
    return false;
  }
}

const addresses = new WeakMap<object, ControllerAddress>();

/** Remembers the controller's address for these services (keyed by their host registry, which pages and VMs both hold). */
export function setControllerAddress(registry: object, address: ControllerAddress): void {
  addresses.set(registry, address);
}

/** The controller's address as set at start (none in tests that build an app without starting a controller). */
export function controllerAddressOf(registry: object): ControllerAddress {
  return addresses.get(registry) ?? { url: undefined, source: 'none' };
}

/**
 * The URL to hand out for a request that reached the controller at `requestBase`: the controller's
 * LAN address for that scheme (agents and LAN browsers are sent to HTTPS when the controller serves
 * it), whatever address the request used; the request's own only when the controller knows no other.
 */
export function handOutBase(requestBase: string, lan: { http?: string | undefined; https?: string | undefined }): string {
  const mine = requestBase.startsWith('https:') ? lan.https : lan.http;
  return mine && !isLoopbackUrl(mine) ? mine : requestBase;
}

/**
 * What a page says when the browser reached the controller through loopback: the address it used,
 * and the one lab PCs will use (none: the controller knows no LAN address, set `publicUrl`).
 */
export function loopbackNotice(requestBase: string, handedOut: string): { opened: string; lanUrl?: string } | undefined {
  if (!isLoopbackUrl(requestBase)) return undefined;
  return { opened: requestBase, ...(isLoopbackUrl(handedOut) ? {} : { lanUrl: handedOut }) };
}

/**
 * An SSH line a student can use from another PC: a host that reported its loopback address (the
 * controller's own local agent without a LAN address) gets the controller's LAN host instead.
 */
export function reachableSsh(ssh: SshAccess, address: ControllerAddress): SshAccess {
  if (!isLoopbackHost(ssh.host) || !address.url) return ssh;
  const host = new URL(address.url).hostname.replace(/^\[|\]$/g, '');
  if (isLoopbackHost(host)) return ssh;
  return { ...ssh, host, command: ssh.command.replace(/@?[^@\s]+$/, (m) => (m.startsWith('@') ? `@${host}` : host)) };
}

export interface InstallDeps {
  /** The URL agents reach this controller at (config `publicUrl`); default: the one the request used. */
  publicUrl?: string;
  /** The controller's LAN addresses, used instead of a loopback address the request came to (see handOutBase). */
  lanAddresses?: () => { http?: string | undefined; https?: string | undefined };
  /** Whether a join token from an install link is accepted (without using it up). */
  checkJoinToken?: (token: string) => { ok: true } | { ok: false; message: string };
  /** The executable to hand out; default: this executable (SEA) or the checkout's dist/skyhost. */
  binary?: () => string;
  /** The join string for an accepted token (server/tokens.ts), left on the host instead of the bare token. */
  joinString?: (token: string) => string | undefined;
  /** sha256 of the controller's public key (base64, curl's `--pinnedpubkey sha256//…`): an https:// script downloads with it. */
  pinnedPubkey?: string;
}

/** What may appear in the script as the controller URL: scheme, host, port, a plain path. */
const SAFE_URL = /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?(\/[A-Za-z0-9._~\/-]*)?$/;
const SAFE_IPV6_URL = /^https?:\/\/\[[0-9A-Fa-f:.]+\](:\d{1,5})?(\/[A-Za-z0-9._~\/-]*)?$/;
/** Join tokens as the controller makes them (cluster `shj_...`, single-use `shs_..._...`). */
const SAFE_TOKEN = /^[A-Za-z0-9._~+\/=-]{8,256}$/;
/** What the script may leave on the host: a token, or a join string `shk1.<base64url>`. */
const SAFE_JOIN = /^[A-Za-z0-9._~+\/=-]{8,2048}$/;
const SAFE_PIN = /^[A-Za-z0-9+\/]{43}=$/;

/**
 * The command the hosts page shows: `curl … | sudo sh`. With the controller's HTTPS address and
 * public-key pin, curl trusts that key and nothing else (-k: the certificate is self-made, the pin is the trust).
 */
export function installCommand(o: { base: string; token: string; httpsBase?: string | undefined; pinnedPubkey?: string | undefined }): string {
  const query = `install.sh?token=${encodeURIComponent(o.token)}`;
  if (o.httpsBase && o.pinnedPubkey && SAFE_PIN.test(o.pinnedPubkey)) {
    return `curl -fsSLk --pinnedpubkey 'sha256//${o.pinnedPubkey}' '${checkControllerUrl(o.httpsBase)}/${query}' | sudo sh`;
  }
  return `curl -fsSL '${checkControllerUrl(o.base)}/${query}' | sudo sh`;
}

/** `it's` -> `'it'\''s'`: a single-quoted sh word that means exactly `s`. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The controller URL an install script may carry, or a 400 naming what is wrong. */
export function checkControllerUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new BadRequest(`controller URL ${JSON.stringify(raw)} is not a URL`, undefined, 'invalid_url');
  }
  const clean = `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname.replace(/\/+$/, '')}`;
  if (url.search || url.hash || url.username || (!SAFE_URL.test(clean) && !SAFE_IPV6_URL.test(clean))) {
    throw new BadRequest(`controller URL ${JSON.stringify(raw)} may only hold a host name, a port and a plain path`, undefined, 'invalid_url');
  }
  return clean;
}

export interface ScriptOptions {
  controllerUrl: string;
  joinToken?: string;
  /** sha256 of the executable /download/skyhost serves, checked after download. */
  binarySha256?: string;
  /** For an https:// controllerUrl: the controller's public-key pin, which curl checks on the download. */
  pinnedPubkey?: string;
}

/** Where the script leaves the join token (root only, 0600); the agent reads it from there. */
export const JOIN_TOKEN_PATH = '/etc/skyhost/join-token';

/**
 * The agent's command line, as the unit runs it and as the script tells people to run it by hand.
 * Never the token: unit files are world-readable and command lines show in `ps`.
 */
function agentArgs(o: ScriptOptions): string {
  return `agent --controller ${o.controllerUrl}`;
}

/**
 * The install script. Values come in checked (URL and token from a safe alphabet) and are
 * single-quoted besides, so nothing in them can act as shell syntax.
 * SKYHOST_ROOT=DIR installs into DIR instead of / (tests, image builders).
 */
export function renderInstallScript(o: ScriptOptions): string {
  const url = checkControllerUrl(o.controllerUrl);
  if (o.joinToken !== undefined && !SAFE_JOIN.test(o.joinToken)) throw new BadRequest('join token has characters a token never has', undefined, 'invalid_token');
  if (o.pinnedPubkey !== undefined && !SAFE_PIN.test(o.pinnedPubkey)) throw new Error('pinnedPubkey must be a base64 sha256');
  const curlTls = url.startsWith('https:') && o.pinnedPubkey ? `-k --pinnedpubkey sha256//${o.pinnedPubkey}` : '';
  if (o.binarySha256 !== undefined && !/^[0-9a-f]{64}$/.test(o.binarySha256)) throw new Error('binarySha256 must be 64 hex digits');
  const opts = { ...o, controllerUrl: url };
  return `#!/bin/sh
# SkyHost install script from the controller at ${url}
# Joins this PC to the SkyHost cluster without reinstalling it: installs the packages a host needs,
# the skyhost executable (/usr/local/bin/skyhost) and the skyhost-agent service, which enrolls.
#   curl -fsSL ${url}/install.sh | sudo sh
set -eu

CONTROLLER_URL=${shellQuote(url)}
JOIN_TOKEN=${shellQuote(o.joinToken ?? '')}
BINARY_SHA256=${shellQuote(o.binarySha256 ?? '')}
# Over HTTPS: the controller's certificate is its own, trusted by its public key (the pin), not by a CA.
CURL_TLS=${shellQuote(curlTls)}
PACKAGES=${shellQuote(HOST_PACKAGES.join(' '))}
TOKEN_PATH=${shellQuote(JOIN_TOKEN_PATH)}
AGENT_ARGS=${shellQuote(agentArgs(opts))}
# SKYHOST_ROOT=DIR installs into DIR instead of this system (tests, image builders).
ROOT="\${SKYHOST_ROOT:-}"
UNIT=skyhost-agent.service

say() { printf 'skyhost: %s\\n' "$*"; }
die() { printf 'skyhost: error: %s\\n' "$*" >&2; exit 1; }

# Everything runs from main, called on the last line: with "curl ... | sh", nothing runs before the
# whole script has arrived, and commands cannot eat the rest of the script from stdin.
main() {
  if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die "run me as root: curl -fsSL $CONTROLLER_URL/install.sh | sudo sh"
  fi

  # 1. The packages a host needs (the same list as "skyhost host setup").
  command -v apt-get >/dev/null 2>&1 || die 'this PC has no apt-get: SkyHost hosts run Ubuntu or Debian'
  say "installing packages: $PACKAGES"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || die 'apt-get update failed (is the school proxy set in /etc/apt/apt.conf.d?)'
  # shellcheck disable=SC2086 # PACKAGES is a list of words
  apt-get install -y -q $PACKAGES || die 'installing packages failed (see the apt-get messages above)'

  # 2. The skyhost executable, from the controller, checked before it replaces anything.
  BIN_DIR="$ROOT/usr/local/bin"
  mkdir -p "$BIN_DIR"
  TMP="$BIN_DIR/.skyhost.download.$$"
  trap 'rm -f "$TMP"' EXIT
  say "downloading skyhost from $CONTROLLER_URL/download/skyhost"
  if command -v curl >/dev/null 2>&1; then
    # shellcheck disable=SC2086 # CURL_TLS is a list of words
    curl -fsSL $CURL_TLS -o "$TMP" "$CONTROLLER_URL/download/skyhost" || die "could not download $CONTROLLER_URL/download/skyhost"
  elif [ -n "$CURL_TLS" ]; then
    die 'need curl to download skyhost over HTTPS with the controller'"'"'s key pinned'
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$TMP" "$CONTROLLER_URL/download/skyhost" || die "could not download $CONTROLLER_URL/download/skyhost"
  else
    die 'need curl or wget to download skyhost'
  fi
  if [ -n "$BINARY_SHA256" ] && command -v sha256sum >/dev/null 2>&1; then
    GOT=$(sha256sum "$TMP" | cut -d' ' -f1)
    [ "$GOT" = "$BINARY_SHA256" ] || die "the downloaded skyhost is damaged (sha256 $GOT, expected $BINARY_SHA256): run the script again"
  fi
  chmod 0755 "$TMP"
  "$TMP" --version >/dev/null 2>&1 || die 'the downloaded skyhost does not run on this PC (it needs 64-bit x86 Linux)'
  mv -f "$TMP" "$BIN_DIR/skyhost"
  say "installed $("$BIN_DIR/skyhost" --version) as /usr/local/bin/skyhost"

  # 3. The join token, readable by root only from the moment it exists (umask 077, then a rename),
  # before any service could start; the agent reads it from TOKEN_PATH. printf is a shell builtin:
  # the token never appears on a command line. Without a token, a file left by an earlier run stays.
  if [ -n "$JOIN_TOKEN" ]; then
    TOKEN_FILE="$ROOT$TOKEN_PATH"
    mkdir -p "$(dirname "$TOKEN_FILE")"
    (
      umask 077
      printf '%s\n' "$JOIN_TOKEN" > "$TOKEN_FILE.new.$$"
      if [ -z "$ROOT" ]; then chown 0:0 "$TOKEN_FILE.new.$$"; fi
      chmod 0600 "$TOKEN_FILE.new.$$"
      mv -f "$TOKEN_FILE.new.$$" "$TOKEN_FILE"
    ) || { rm -f "$TOKEN_FILE.new.$$"; die "could not write the join token to $TOKEN_PATH"; }
    say "join token saved in $TOKEN_PATH (readable by root only)"
  fi

  # 4. The agent service: it finds the controller at CONTROLLER_URL and enrolls with the token file.
  UNIT_DIR="$ROOT/etc/systemd/system"
  mkdir -p "$UNIT_DIR"
  cat > "$UNIT_DIR/$UNIT" <<UNIT_END
[Unit]
Description=SkyHost agent: runs VMs for the SkyHost controller at $CONTROLLER_URL
After=network-online.target libvirtd.service
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/skyhost $AGENT_ARGS
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT_END
  chmod 0644 "$UNIT_DIR/$UNIT"

  STARTED=no
  if command -v systemctl >/dev/null 2>&1; then
    if [ -n "$ROOT" ]; then
      systemctl --root="$ROOT" enable "$UNIT" >/dev/null 2>&1 && say "enabled $UNIT in $ROOT"
    elif [ -d /run/systemd/system ]; then
      systemctl daemon-reload
      # restart, not start: running the script again replaces the executable and must take effect
      systemctl enable "$UNIT" >/dev/null 2>&1 && systemctl restart "$UNIT" && STARTED=yes
    else
      systemctl enable "$UNIT" >/dev/null 2>&1 && say "enabled $UNIT: it starts at the next boot"
    fi
  fi

  if [ "$STARTED" = yes ]; then
    say "the agent is running: this PC appears on $CONTROLLER_URL within a minute"
    if [ -z "$JOIN_TOKEN" ]; then say 'an admin approves it there (Hosts page) before it gets VMs'; fi
  else
    say 'systemd is not running here, so the agent was not started. Start it now with:'
    say "  nohup /usr/local/bin/skyhost $AGENT_ARGS >/var/log/skyhost-agent.log 2>&1 &"
  fi
}

main "$@" </dev/null
`;
}

/** A script that only says why it cannot install (so `curl URL | sh` never runs an error page). */
export function refusalScript(message: string): string {
  return `#!/bin/sh\nprintf 'skyhost: error: %s\\n' ${shellQuote(message)} >&2\nexit 1\n`;
}

const hashes = new Map<string, { key: string; sha256: string }>();

/** sha256 of a file, remembered while its size and mtime stay the same. */
async function fileSha256(file: string): Promise<string> {
  const st = statSync(file);
  const key = `${st.size}:${st.mtimeMs}`;
  const known = hashes.get(file);
  if (known?.key === key) return known.sha256;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  const sha256 = hash.digest('hex');
  hashes.set(file, { key, sha256 });
  return sha256;
}

function locateBinary(deps: InstallDeps): string {
  try {
    return (deps.binary ?? skyhostExecutable)();
  } catch {
    // Whatever stops us from finding it, there is nothing to hand out; the message says how to fix that.
    throw new Unavailable('this controller has no skyhost executable to hand out: build it with "npm run build" (dist/skyhost)', undefined, 'binary_missing');
  }
}

function requestBaseUrl(req: Request): string {
  return `${req.protocol}://${req.get('host') ?? ''}`;
}

/** `/install.sh` and `/download/skyhost`; mount at the controller's root. */
export function installRouter(deps: InstallDeps = {}): Router {
  const router = Router();
  router.get('/install.sh', async (req, res, next) => {
    try {
      res.type('text/x-shellscript; charset=utf-8');
      res.setHeader('Cache-Control', 'no-store');
      const raw = req.query.token;
      if (raw !== undefined && typeof raw !== 'string') throw new BadRequest('token: give it once', undefined, 'invalid_token');
      let joinToken: string | undefined;
      if (raw) {
        if (!SAFE_TOKEN.test(raw)) {
          res.status(400).send(refusalScript('the join token in this install link is malformed: copy the link again from the Hosts page'));
          return;
        }
        const verdict = deps.checkJoinToken ? deps.checkJoinToken(raw) : { ok: false as const, message: 'this controller does not accept join tokens in install links' };
        if (!verdict.ok) {
          res.status(403).send(refusalScript(`the join token in this install link is not accepted: ${verdict.message}. Make a new link on the Hosts page.`));
          return;
        }
        joinToken = deps.joinString?.(raw) ?? raw;
      }
      let controllerUrl: string;
      try {
        // publicUrl (inside lanAddresses too) for its own scheme; a script fetched over HTTPS downloads over HTTPS, pinned
        const lan = deps.lanAddresses?.() ?? {};
        const pub = deps.publicUrl?.replace(/\/+$/, '');
        controllerUrl = checkControllerUrl(handOutBase(requestBaseUrl(req), {
          http: lan.http ?? pub, https: lan.https ?? (pub?.startsWith('https:') ? pub : undefined),
        }));
      } catch {
        res.status(400).send(refusalScript("the address this controller was reached at cannot go into a script: set publicUrl in the controller's config"));
        return;
      }
      let binarySha256: string | undefined;
      try {
        binarySha256 = await fileSha256(locateBinary(deps));
      } catch {
        binarySha256 = undefined; // the download itself answers 503 with the reason
      }
      const pinnedPubkey = controllerUrl.startsWith('https:') ? deps.pinnedPubkey : undefined;
      res.send(renderInstallScript({ controllerUrl, ...(joinToken ? { joinToken } : {}), ...(binarySha256 ? { binarySha256 } : {}), ...(pinnedPubkey ? { pinnedPubkey } : {}) }));
    } catch (e) {
      next(e);
    }
  });
  router.get('/download/skyhost', (_req, res, next) => {
    try {
      const file = locateBinary(deps);
      res.setHeader('Content-Type', 'application/octet-stream');
      res.setHeader('Content-Disposition', 'attachment; filename="skyhost"');
      res.sendFile(file, { dotfiles: 'allow', cacheControl: false }, (err) => {
        if (err && !res.headersSent) next(err);
      });
    } catch (e) {
      next(e);
    }
  });
  return router;
}
