// @ts-check
/**
 * The pairing page. `whiteboard display add` prints /displays/pair#CODE: the code is in the
 * fragment, which browsers never send to a server, so it stays out of access logs and link
 * previews cannot spend it. This script takes it from the fragment, removes it from the
 * address bar (and history), puts it in the form and posts the form. Without a fragment a
 * person types the code.
 */

const form = /** @type {HTMLFormElement | null} */ (document.getElementById("pair-form"));
const input = /** @type {HTMLInputElement | null} */ (document.getElementById("code"));
/** @param {string} raw */
function fromFragment(raw) {
  try {
    return decodeURIComponent(raw.replace(/^#/, "")).trim();
  } catch {
    return "";
  }
}
const code = fromFragment(location.hash);

if (code) history.replaceState(null, "", location.pathname + location.search);

if (form && input) {
  if (code && /^[0-9A-Za-z][0-9A-Za-z \-]{3,30}$/.test(code)) {
    input.value = code;
    form.requestSubmit();
  } else {
    input.focus();
  }
}
