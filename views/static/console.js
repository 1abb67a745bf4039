// The VM page's consoles. Serial: xterm.js over the WebSocket /api/vms/:id/console (the serial
// line's bytes both ways, and the agent's notices: what the line is doing, where the replay is), with
// copy (selection, Ctrl+Shift+C) and paste (Ctrl+Shift+V, the browser's paste, a Paste button that
// also works on plain http). Graphical: noVNC over /api/vms/:id/vnc.
// Everything is served by the controller itself (/static/vendor/...).

const encoder = new TextEncoder();

function socketUrl(path) {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path;
}

function setStatus(el, text, state) {
  if (!el) return;
  el.textContent = text;
  el.className = 'conn ' + (state || '');
}

function startSerial(box) {
  const status = document.getElementById('console-status');
  const term = new window.Terminal({
    cursorBlink: true,
    convertEol: false,
    fontSize: window.innerWidth >= 1400 ? 17 : 15,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", monospace',
    scrollback: 5000,
    theme: { background: '#000000' },
  });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  const refit = () => { try { fit.fit(); } catch { /* hidden */ } };
  refit();
  window.addEventListener('resize', refit);
  if (window.ResizeObserver) new ResizeObserver(refit).observe(box);

  // What the status says comes from the socket (open or not), the agent's notices about the serial line
  // (text frames: {"console": STATE}, {"history": N}) and, failing those, the VM's state on the polled card.
  const LINE = {
    connected: ['connected', 'open'],
    rebooting: ['rebooting…', ''],
    reconnecting: ['reconnecting…', ''],
    stopped: ['stopped: start the VM to use its console', 'closed'],
  };
  const show = (state, text, cls) => {
    setStatus(status, text, cls);
    if (status) status.dataset.state = state;
  };
  let ws;
  let retry = 0;
  let timer;
  let line; // the agent's last notice on this socket
  // While replayed history is written, what xterm answers (to old cursor-position queries, ESC[6n)
  // must not reach the guest: it would be typed into today's shell.
  let replaying = false;
  const send = (text) => {
    if (!replaying && ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(text));
  };
  term.onData(send);

  const vmState = () => document.getElementById('vm-detail')?.dataset.state;
  function showLine() {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (line && LINE[line]) return show(line, ...LINE[line]);
    // an agent that sends no notices: the VM card says whether it runs
    if (vmState() === 'shutoff') return show('stopped', ...LINE.stopped);
    show('connected', ...LINE.connected);
  }
  document.body.addEventListener('htmx:afterSwap', showLine);

  function connect() {
    clearTimeout(timer);
    if (ws) { ws.onclose = null; ws.close(); }
    show(retry > 0 ? 'reconnecting' : 'connecting', retry > 0 ? 'reconnecting…' : 'connecting…', '');
    ws = new WebSocket(socketUrl(box.dataset.socket));
    ws.binaryType = 'arraybuffer';
    line = undefined;
    let history = true; // the first bytes after opening are the agent's replay
    ws.onopen = () => {
      retry = 0;
      showLine();
      term.focus();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        let notice;
        try { notice = JSON.parse(ev.data); } catch { return; }
        if (typeof notice.history === 'number') history = true;
        if (typeof notice.console === 'string') { history = false; line = notice.console; showLine(); }
        return;
      }
      const bytes = new Uint8Array(ev.data);
      if (!history) return term.write(bytes);
      // The replay starts from a clean screen, and nothing xterm answers to it goes to the guest.
      history = false;
      term.reset();
      replaying = true;
      term.write(bytes, () => { replaying = false; });
    };
    ws.onclose = () => {
      const wait = Math.min(10, 2 ** retry++);
      show('reconnecting', `disconnected: reconnecting in ${wait} s…`, 'closed');
      timer = setTimeout(connect, wait * 1000);
    };
  }
  connect();

  const copySelection = () => {
    const text = term.getSelection();
    if (text) window.skyhostCopy(text).catch(() => {});
    return text;
  };
  const pasteText = (text) => { if (text) term.paste(text); };
  const pasteFromClipboard = () => {
    if (navigator.clipboard && navigator.clipboard.readText && window.isSecureContext) {
      navigator.clipboard.readText().then(pasteText, () => pasteText(window.prompt('Paste the text to send:') || ''));
    } else {
      pasteText(window.prompt('Paste the text to send:') || '');
    }
    term.focus();
  };
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey) return true;
    const key = ev.key.toLowerCase();
    // Ctrl+Shift+C copies; Ctrl+Shift+V lets the browser's own paste event reach xterm.
    if (key === 'c') { copySelection(); ev.preventDefault(); return false; }
    if (key === 'v') return false;
    return true;
  });
  document.getElementById('console-copy')?.addEventListener('click', () => { copySelection(); term.focus(); });
  document.getElementById('console-paste')?.addEventListener('click', pasteFromClipboard);
  document.getElementById('console-reconnect')?.addEventListener('click', () => { retry = 0; connect(); });
  window.skyhostConsole = { term, send, copySelection, state: () => status?.dataset.state };
}

// A load cut short because the browser is leaving the page is no failure: reloading would take over
// the navigation the user asked for.
let leaving = false;
addEventListener('beforeunload', () => { leaving = true; });
addEventListener('pagehide', () => { leaving = true; });

// A browser keeps a failed script or module load (a network change on the way cuts one short), so
// the one retry that works is a fresh page: at most one every 30 s. Answers false when it will not.
function reloadOnce() {
  if (leaving) return true;
  const last = Number(sessionStorage.getItem('skyhost-console-reload') || 0);
  if (Date.now() - last < 30000) return false;
  sessionStorage.setItem('skyhost-console-reload', String(Date.now()));
  location.reload();
  return true;
}

// noVNC is ~40 small modules.
async function loadRfb() {
  try {
    return (await import('/static/vendor/novnc/core/rfb.js')).default;
  } catch (err) {
    if (!reloadOnce()) throw err;
    return new Promise(() => {});
  }
}

async function startVnc(box) {
  const status = document.getElementById('vnc-status');
  const RFB = await loadRfb();
  let rfb;
  let retry = 0;
  let timer;
  const connect = () => {
    clearTimeout(timer);
    if (rfb) { rfb.removeEventListener('disconnect', onDisconnect); rfb.disconnect(); }
    box.replaceChildren();
    setStatus(status, 'connecting…', '');
    rfb = new RFB(box, socketUrl(box.dataset.socket));
    rfb.scaleViewport = true;
    rfb.resizeSession = false;
    rfb.addEventListener('connect', () => { retry = 0; setStatus(status, 'connected', 'open'); });
    rfb.addEventListener('disconnect', onDisconnect);
  };
  // A VM that is still starting has no screen yet: try again, waiting longer each time.
  function onDisconnect() {
    const wait = Math.min(10, 2 ** retry++);
    setStatus(status, `disconnected: retrying in ${wait} s`, 'closed');
    timer = setTimeout(connect, wait * 1000);
  }
  connect();
  document.getElementById('vnc-cad')?.addEventListener('click', () => rfb && rfb.sendCtrlAltDel());
  document.getElementById('vnc-reconnect')?.addEventListener('click', () => { retry = 0; connect(); });
}

const terminal = document.getElementById('terminal');
if (terminal && window.Terminal) startSerial(terminal);
else if (terminal && !reloadOnce()) setStatus(document.getElementById('console-status'), 'the console script did not load: reload the page', 'closed');
const vnc = document.getElementById('vnc');
if (vnc) startVnc(vnc).catch((err) => setStatus(document.getElementById('vnc-status'), 'noVNC failed: ' + err.message, 'closed'));
