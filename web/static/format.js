// @ts-check
/** Small helpers the screens share: building elements and formatting for people. */

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** An element by id, typed loosely for the page scripts. @param {string} id */
export function byId(id) {
  return /** @type {any} */ (document.getElementById(id));
}

/** 10 digits shown 3-3-4 (screens only; the API keeps 10 digits). @param {string | null | undefined} n */
export function nhsSpaced(n) {
  return n && /^\d{10}$/.test(n) ? `${n.slice(0, 3)} ${n.slice(3, 6)} ${n.slice(6)}` : "not recorded";
}

/** "WONG, Peter". @param {{given_name?: string, family_name?: string}} patient */
export function fullName(patient) {
  return `${(patient.family_name ?? "").toUpperCase()}, ${patient.given_name ?? ""}`;
}

const DAY = new Intl.DateTimeFormat("en-GB", { timeZone: "UTC", weekday: "short", day: "numeric", month: "short" });

/** "Thu 3 Dec" for 2026-12-03. @param {string} iso */
export function shortDate(iso) {
  return DAY.format(new Date(`${iso}T12:00:00Z`));
}

/** "J12-B1-3" on ward J12 shows as "B1-3". @param {string} code @param {string} ward */
export function bedLabel(code, ward) {
  return code.startsWith(`${ward}-`) ? code.slice(ward.length + 1) : code;
}

export const STATE_LABELS = /** @type {Record<string, string>} */ ({
  available: "Available",
  occupied: "Occupied",
  dirty: "Dirty",
  closed: "Closed",
  reserved: "Reserved",
});
