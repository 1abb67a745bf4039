// The USB step: "Erase" stays disabled until a drive is chosen and its name typed exactly as shown
// (the server checks both again). Event delegation: htmx swaps the form in and out.
function checkErase() {
  const form = document.getElementById('usb-form');
  const button = document.getElementById('usb-write');
  if (!form || !button) return;
  const chosen = form.querySelector('input[name=device]:checked');
  const typed = form.querySelector('input[name=confirm]');
  const ready = Boolean(chosen && typed && typed.value.trim() === chosen.dataset.confirm);
  button.disabled = !ready;
  const hint = document.getElementById('usb-write-hint');
  if (hint) hint.textContent = ready ? '' : chosen ? 'Type the name shown beside the drive to enable Erase.' : 'Choose a drive to enable Erase.';
}
document.addEventListener('input', checkErase);
document.addEventListener('change', checkErase);
document.addEventListener('htmx:afterSettle', checkErase);
document.addEventListener('DOMContentLoaded', checkErase);
