// @ts-check
/**
 * The capacity board is drawn on the server (tables and an SVG chart). This keeps it current:
 * it listens to every ward's socket and, when any ward changes, fetches the page again and
 * swaps in its content (debounced to at most once every 2 s). No ward changing for 15 s shows
 * "Not live since HH:MM", as on every screen.
 */

import { StaleBanner, watchWards } from "./live.js";

const wards = (document.body.dataset.wards ?? "").split(" ").filter(Boolean);
const content = document.getElementById("capacity-content");
/** Wards whose first snapshot has come: that one only repeats what the page shows. */
const seen = new Set();
/** @type {ReturnType<typeof setTimeout> | null} */
let pending = null;

async function refresh() {
  pending = null;
  try {
    const response = await fetch(location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.getElementById("capacity-content");
    if (fresh && content) content.replaceChildren(...fresh.childNodes);
  } catch {
    /* the banner says when we are not live */
  }
}

/**
 * @param {string} ward
 * @param {"snapshot" | "change"} kind
 */
function soon(ward, kind) {
  if (kind === "snapshot" && !seen.has(ward)) {
    seen.add(ward);
    return;
  }
  if (pending === null) pending = setTimeout(refresh, 2000);
}

watchWards(wards, soon, new StaleBanner(document.getElementById("stale-banner")));
