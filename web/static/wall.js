// @ts-check
/**
 * The wall screen: the ward's display view, live, readable from across the bay.
 *
 * Beds are grouped by bay; each tile shows the bed, initials, precaution symbols, public
 * alerts, EDD (today and overdue stand out), the red/green day, discharge readiness and the
 * bed's state. When the ward does not fit the screen, bays are split into pages that turn by
 * themselves. The display view carries no names, NHS numbers or organisms, and nor does this.
 */

import { bedLabel as label, el } from "./format.js";
import { LiveWard, StaleBanner, londonDate, londonTime } from "./live.js";
import { fillLegend, flagSymbols } from "./symbols.js";

const body = document.body;
const ward = body.dataset.ward ?? "";
const columns = Number(body.dataset.columns) || 6;
const pageSeconds = Number(body.dataset.pageSeconds) || 20;
document.documentElement.style.fontSize = `${Number(body.dataset.baseFont) || 20}px`;
body.style.setProperty("--columns", String(columns));

const board = /** @type {HTMLElement} */ (document.getElementById("board"));
const banner = new StaleBanner(document.getElementById("stale-banner"));
const clock = /** @type {HTMLElement} */ (document.getElementById("clock"));
const updated = /** @type {HTMLElement} */ (document.getElementById("updated"));
const pageIndicator = /** @type {HTMLElement} */ (document.getElementById("page-indicator"));

/** @type {any[]} */
let beds = [];
let pageIndex = 0;
/** @type {number[][]} */
let pages = [];

const ALERTS = /** @type {Record<string, string>} */ ({
  falls_risk: "FALLS",
  dementia: "DEM",
  nil_by_mouth: "NBM",
  pressure_ulcer_risk: "PU",
});
const STATE_LABELS = /** @type {Record<string, string>} */ ({
  available: "Free",
  dirty: "Dirty",
  closed: "Closed",
  reserved: "Reserved",
  occupied: "Occupied",
});
const DAY = new Intl.DateTimeFormat("en-GB", { timeZone: "UTC", weekday: "short", day: "numeric", month: "short" });
const DAY_SHORT = new Intl.DateTimeFormat("en-GB", { timeZone: "UTC", day: "numeric", month: "short" });

/** "J12-B1-3" on ward J12 shows as "B1-3". @param {string} code */
const bedLabel = (code) => label(code, ward);

/** @param {string} initials */
function dotted(initials) {
  return initials
    .split("")
    .map((c) => `${c}.`)
    .join("");
}

/** @param {string} iso YYYY-MM-DD @param {boolean} [withDay] */
function shortDate(iso, withDay = false) {
  return (withDay ? DAY : DAY_SHORT).format(new Date(`${iso}T12:00:00Z`));
}

/** @param {any} stay */
function eddBadge(stay) {
  if (!stay.edd) return null;
  const today = londonDate(new Date());
  if (stay.edd === today) return el("span", "edd edd--today", "EDD today");
  if (stay.edd < today) return el("span", "edd edd--overdue", `Overdue ${shortDate(stay.edd)}`);
  return el("span", "edd", `EDD ${shortDate(stay.edd, true)}`);
}

/** @param {any} stay */
function readiness(stay) {
  const d = stay.discharge ?? {};
  const box = el("span", "ready");
  /** @type {[boolean, string, string][]} */
  const items = [
    [Boolean(d.medically_optimised), "MO", "Medically optimised"],
    [d.pathway !== null && d.pathway !== undefined, `P${d.pathway}`, `Discharge pathway ${d.pathway}`],
    [Boolean(d.tto_ready), "TTO", "Medicines to take out ready"],
    [Boolean(d.transport_booked), "TR", "Transport booked"],
  ];
  for (const [done, text, title] of items) {
    if (!done) continue;
    const pill = el("span", "ready-pill ready-pill--done", text);
    pill.title = title;
    box.append(pill);
  }
  return box;
}

/** @param {any} bed */
function tile(bed) {
  const t = el("article", `tile tile--${bed.state}`);
  t.dataset.bed = bed.code;
  const top = el("div", "tile__top");
  top.append(el("span", "tile__bed", bedLabel(bed.code)));
  const stay = bed.stay;
  if (stay && stay.day_status) {
    const day = el("span", `day day--${stay.day_status}`, stay.day_status === "red" ? "R" : "G");
    day.title = stay.day_status === "red" ? "Red day" : "Green day";
    top.append(day);
  }
  t.append(top);
  if (!stay) {
    t.append(el("p", "tile__state", STATE_LABELS[bed.state] ?? bed.state));
    return t;
  }
  const who = el("div", "tile__who");
  who.append(el("span", "tile__initials", dotted(stay.patient?.initials ?? "")));
  const symbols = el("span", "tile__symbols");
  symbols.append(...flagSymbols(stay.flags ?? []));
  who.append(symbols);
  t.append(who);
  const foot = el("div", "tile__foot");
  for (const a of stay.alerts ?? []) {
    if (ALERTS[a]) foot.append(el("span", `alert-chip alert-chip--${a}`, ALERTS[a]));
  }
  const edd = eddBadge(stay);
  if (edd) foot.append(edd);
  foot.append(readiness(stay));
  t.append(foot);
  if (bed.state !== "occupied") t.append(el("p", "tile__state", STATE_LABELS[bed.state] ?? bed.state));
  return t;
}

/** @param {string} bay @param {any[]} bayBeds */
function bayName(bay, bayBeds) {
  if (bayBeds.every((b) => b.kind !== "bay")) return bay === "SR" ? "Side rooms" : bay;
  return /^B\d+$/i.test(bay) ? `Bay ${bay.slice(1)}` : bay;
}

function render() {
  /** @type {Map<string, any[]>} */
  const bays = new Map();
  for (const bed of beds) {
    if (!bays.has(bed.bay)) bays.set(bed.bay, []);
    bays.get(bed.bay)?.push(bed);
  }
  const sections = [];
  for (const [bay, bayBeds] of bays) {
    const section = el("section", "bay");
    section.append(el("h2", "bay__name", bayName(bay, bayBeds)));
    const grid = el("div", "bay__beds");
    grid.append(...bayBeds.map(tile));
    section.append(grid);
    sections.push(section);
  }
  board.replaceChildren(...sections);
  summarise();
  paginate();
}

function summarise() {
  const today = londonDate(new Date());
  /** @type {Record<string, number>} */
  const counts = { occupied: 0, available: 0, dirty: 0, closed: 0, today: 0 };
  for (const bed of beds) {
    if (bed.state in counts) counts[bed.state] += 1;
    if (bed.stay && bed.stay.edd === today) counts.today += 1;
  }
  /** @type {[string, number][]} */
  const cells = [
    ["sum-occupied", counts.occupied],
    ["sum-free", counts.available],
    ["sum-dirty", counts.dirty],
    ["sum-closed", counts.closed],
    ["sum-today", counts.today],
  ];
  for (const [id, n] of cells) {
    const cell = document.getElementById(id);
    if (cell) cell.textContent = String(n);
  }
}

/** Split bays into pages that fit the board's height (a bay never splits). */
function paginate() {
  const sections = /** @type {HTMLElement[]} */ ([...board.children]);
  sections.forEach((s) => (s.hidden = false));
  const room = board.clientHeight;
  pages = [];
  let used = 0;
  sections.forEach((section, i) => {
    const gap = parseFloat(getComputedStyle(board).rowGap) || 0;
    const height = section.offsetHeight + (pages.length && used ? gap : 0);
    if (pages.length === 0 || used + height > room) {
      pages.push([i]);
      used = section.offsetHeight;
    } else {
      pages[pages.length - 1].push(i);
      used += height;
    }
  });
  if (pageIndex >= pages.length) pageIndex = 0;
  showPage();
}

function showPage() {
  const sections = /** @type {HTMLElement[]} */ ([...board.children]);
  const visible = new Set(pages[pageIndex] ?? []);
  sections.forEach((s, i) => (s.hidden = pages.length > 1 && !visible.has(i)));
  if (pages.length > 1) {
    pageIndicator.hidden = false;
    pageIndicator.textContent = `Page ${pageIndex + 1} of ${pages.length}`;
  } else {
    pageIndicator.hidden = true;
  }
}

function turnPage() {
  if (pages.length > 1) {
    pageIndex = (pageIndex + 1) % pages.length;
    showPage();
  }
}

function tick() {
  clock.textContent = londonTime(new Date());
}

/** @param {string | undefined} at */
function markUpdated(at) {
  updated.textContent = `Updated ${londonTime(at ? new Date(at) : new Date())}`;
}

const live = new LiveWard({
  ward,
  view: "display",
  onSnapshot(frame) {
    beds = frame.beds;
    document.getElementById("waiting")?.remove();
    render();
    markUpdated(undefined);
  },
  onChange(frame) {
    if (frame.bed) beds = beds.map((b) => (b.code === frame.bed.code ? frame.bed : b));
    render();
    markUpdated(frame.at);
  },
  onStatus(status) {
    banner.update(status);
  },
  onAuthLost() {
    // A revoked display goes back to pairing; a member of staff whose session ended, to sign-in.
    if (body.dataset.viewer === "display") location.assign("/displays/pair");
    else location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  },
});

fillLegend();
tick();
setInterval(tick, 1000);
setInterval(turnPage, pageSeconds * 1000);
window.addEventListener("resize", () => paginate());
// A keyboard at the screen can turn pages too (PageDown / arrow right).
window.addEventListener("keydown", (event) => {
  if (event.key === "PageDown" || event.key === "ArrowRight") turnPage();
});
live.start();
