// The templates page's upload: sends the chosen file as the raw body of POST /api/templates (into the
// controller's catalog) with a progress bar, then asks the list to refresh.
const form = document.getElementById('template-upload');
if (form) {
  const bar = document.getElementById('upload-progress');
  const status = document.getElementById('upload-status');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const file = data.get('file');
    if (!(file instanceof File) || file.size === 0) {
      status.textContent = 'Choose a disk image first.';
      return;
    }
    const query = new URLSearchParams({ name: String(data.get('name') || '').trim() });
    for (const key of ['kind', 'console', 'os']) if (data.get(key)) query.set(key, String(data.get(key)).trim());
    if (data.get('sha256')) query.set('sha256', String(data.get('sha256')).trim().toLowerCase());
    if (data.get('needsKvm')) query.set('needsKvm', 'true');
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/templates?' + query.toString());
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('X-CSRF-Token', form.dataset.csrf || '');
    xhr.setRequestHeader('Accept', 'application/json');
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    status.textContent = 'Uploading ' + file.name + '…';
    xhr.upload.addEventListener('progress', (e) => {
      if (!e.lengthComputable) return;
      bar.value = Math.floor((e.loaded * 100) / e.total);
      status.textContent = e.loaded < e.total ? 'Uploading ' + file.name + ': ' + bar.value + '%' : 'Checking ' + file.name + '…';
    });
    const done = (text) => {
      button.disabled = false;
      bar.hidden = true;
      status.textContent = text;
      document.body.dispatchEvent(new CustomEvent('templates-changed'));
    };
    xhr.addEventListener('load', () => {
      if (xhr.status === 201) {
        form.reset();
        done('Uploaded: the template ' + query.get('name') + ' is in the catalog.');
        return;
      }
      let message = 'The upload failed (' + xhr.status + ').';
      try { message = 'Not uploaded: ' + JSON.parse(xhr.responseText).error.message; } catch (e) { /* not our error shape: keep the status */ }
      done(message);
    });
    xhr.addEventListener('error', () => done('The upload broke off: the controller does not answer. Nothing was kept; try again.'));
    xhr.send(file);
  });
}

// The build log keeps its newest line in view, unless the reader has scrolled up to read.
const atBottom = (log) => log.scrollHeight - log.scrollTop - log.clientHeight < 24;
let followLog = true;
const showNewest = () => {
  const log = document.getElementById('build-log');
  if (log && followLog) log.scrollTop = log.scrollHeight;
};
document.body.addEventListener('htmx:beforeSwap', (ev) => {
  const log = document.getElementById('build-log');
  if (log && ev.detail.elt && ev.detail.elt.id === 'build-poll') followLog = atBottom(log);
  if (ev.detail.target && ev.detail.target.id === 'template-build') followLog = true;
});
document.body.addEventListener('htmx:afterSettle', showNewest);
showNewest();
