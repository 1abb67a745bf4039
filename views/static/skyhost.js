// SkyHost's page glue (no framework): copy buttons that work on plain http (a school LAN has no
// TLS, where navigator.clipboard is missing), and the #flash notices that htmx errors land in.
(function () {
  'use strict';

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {
      var area = document.createElement('textarea');
      area.value = text;
      area.setAttribute('readonly', '');
      area.style.position = 'fixed';
      area.style.opacity = '0';
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      area.remove();
      if (ok) resolve(); else reject(new Error('copy failed'));
    });
  }
  window.skyhostCopy = copyText;

  document.addEventListener('click', function (ev) {
    var button = ev.target.closest && ev.target.closest('[data-copy]');
    if (button) {
      var source = document.getElementById(button.getAttribute('data-copy'));
      if (!source) return;
      var label = button.textContent;
      copyText(source.textContent.trim()).then(function () {
        button.textContent = 'Copied';
      }, function () {
        button.textContent = 'Select and copy';
        var range = document.createRange();
        range.selectNodeContents(source);
        var sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      });
      setTimeout(function () { button.textContent = label; }, 1500);
      return;
    }
    var note = ev.target.closest && ev.target.closest('#flash .flash');
    if (note) note.remove();
  });

  // A notice in #flash goes away by itself after a while.
  document.addEventListener('htmx:afterSwap', function (ev) {
    if (ev.detail && ev.detail.target && ev.detail.target.id === 'flash') {
      var note = ev.detail.target.firstElementChild;
      setTimeout(function () { if (note && note.parentNode) note.remove(); }, 8000);
    }
  });
  // A polled partial says which version it is; the controller answers 204 (nothing to swap) while it is current.
  document.addEventListener('htmx:configRequest', function (ev) {
    var elt = ev.detail && ev.detail.elt;
    var version = elt && elt.getAttribute && elt.getAttribute('data-version');
    if (version && ev.detail.verb === 'get') ev.detail.headers['X-SkyHost-Version'] = version;
  });
  function showFlash(message) {
    var flash = document.getElementById('flash');
    if (!flash) return;
    var note = document.createElement('div');
    note.className = 'flash error';
    note.setAttribute('role', 'alert');
    note.textContent = message;
    flash.replaceChildren(note);
    setTimeout(function () { note.remove(); }, 8000);
  }
  // An answer from the JSON side (e.g. a CSRF refusal) is never swapped into the page: its message goes to #flash.
  document.addEventListener('htmx:beforeSwap', function (ev) {
    var xhr = ev.detail.xhr;
    if ((xhr.getResponseHeader('Content-Type') || '').indexOf('application/json') !== 0) return;
    ev.detail.shouldSwap = false;
    var message = 'The request failed (' + xhr.status + ').';
    try { message = JSON.parse(xhr.responseText).error.message || message; } catch (e) { /* not our error shape */ }
    showFlash(message);
  });
  // A lost connection shows once instead of failing silently.
  document.addEventListener('htmx:sendError', function () {
    var flash = document.getElementById('flash');
    if (flash && !flash.firstElementChild) showFlash('The controller does not answer. Retrying…');
  });
})();
