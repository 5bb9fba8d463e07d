// @ts-check
/**
 * The tablet board: the ward's clinical view, live; a tap on a bed opens its edit panel
 * (panels.js). Every write goes through the API with If-Match, so a stale edit is refused,
 * never applied.
 */

import { keepSessionAlive } from "./api.js";
import { STATE_LABELS, bedLabel as label, byId as $, el, fullName, nhsSpaced, shortDate } from "./format.js";
import { LiveWard, StaleBanner, londonDate, londonTime } from "./live.js";
import { setUpPanels } from "./panels.js";
import { fillLegend, flagSymbols } from "./symbols.js";

const ward = document.body.dataset.ward ?? "";

/** @type {any[]} */
let beds = [];
/** @type {any[]} */
let unplaced = [];

const boardEl = $("board");
const banner = new StaleBanner($("stale-banner"));
const ALERT_LABELS = Object.fromEntries(
  [...document.querySelectorAll('input[name="alerts"]')].map((input) => [
    /** @type {HTMLInputElement} */ (input).value,
    input.parentElement?.textContent?.trim() ?? "",
  ]),
);
/** @param {string} code */
const bedLabel = (code) => label(code, ward);

// --- the board ---------------------------------------------------------------------------------

/** @param {any} bed */
function bedCard(bed) {
  const card = el("button", `bed-card bed-card--${bed.state}`);
  card.setAttribute("type", "button");
  card.dataset.bed = bed.code;
  const top = el("span", "bed-card__row");
  top.append(el("span", "bed-card__bed", `Bed ${bedLabel(bed.code)}`));
  top.append(el("span", "bed-card__state", STATE_LABELS[bed.state] ?? bed.state));
  card.append(top);
  const stay = bed.stay;
  if (!stay) return card;
  card.append(el("span", "bed-card__name", fullName(stay.patient)));
  card.append(el("span", "bed-card__nhs", `NHS ${nhsSpaced(stay.patient.nhs_number)}`));
  const tags = el("span", "bed-card__row");
  if (stay.day_status) tags.append(el("span", `tag tag--${stay.day_status}`, stay.day_status === "red" ? "Red day" : "Green day"));
  if (stay.edd) {
    const today = londonDate(new Date());
    const kind = stay.edd === today ? " tag--today" : stay.edd < today ? " tag--overdue" : "";
    const words = stay.edd === today ? "EDD today" : `EDD ${shortDate(stay.edd)}${stay.edd < today ? " (overdue)" : ""}`;
    tags.append(el("span", `tag${kind}`, words));
  }
  if (stay.news2 !== null && stay.news2 !== undefined) {
    tags.append(el("span", `tag ${stay.news2 >= 5 ? "tag--news-high" : "tag--news"}`, `NEWS2 ${stay.news2}`));
  }
  card.append(tags);
  if ((stay.flags ?? []).length) {
    const flags = el("span", "bed-card__row");
    flags.append(...flagSymbols(stay.flags));
    for (const f of stay.flags) flags.append(el("span", "tag tag--flag", `${f.code} (${f.status})`));
    card.append(flags);
  }
  if ((stay.alerts ?? []).length) {
    const alerts = el("span", "bed-card__row");
    for (const a of stay.alerts) alerts.append(el("span", "tag tag--alert", ALERT_LABELS[a] || a));
    card.append(alerts);
  }
  const d = stay.discharge ?? {};
  const ready = [
    d.medically_optimised ? "Medically optimised" : "",
    d.pathway !== null && d.pathway !== undefined ? `Pathway ${d.pathway}` : "",
    d.tto_ready ? "TTO ready" : "",
    d.transport_booked ? "Transport booked" : "",
  ].filter(Boolean);
  if (ready.length) card.append(el("span", "meta", ready.join(" · ")));
  if (stay.named_nurse) card.append(el("span", "meta", `Nurse: ${stay.named_nurse}`));
  return card;
}

function render() {
  /** @type {Map<string, any[]>} */
  const bays = new Map();
  for (const bed of beds) {
    if (!bays.has(bed.bay)) bays.set(bed.bay, []);
    bays.get(bed.bay)?.push(bed);
  }
  const groups = [];
  for (const [bay, bayBeds] of bays) {
    const group = el("section", "bay-group");
    const side = bayBeds.every((b) => b.kind !== "bay");
    group.append(el("h2", "", side ? "Side rooms" : /^B\d+$/i.test(bay) ? `Bay ${bay.slice(1)}` : bay));
    const grid = el("div", "bed-grid");
    grid.append(...bayBeds.map(bedCard));
    group.append(grid);
    groups.push(group);
  }
  boardEl.replaceChildren(...groups);
  boardEl.setAttribute("aria-busy", "false");
  renderUnplaced();
  summarise();
}

function renderUnplaced() {
  const section = $("unplaced");
  section.hidden = unplaced.length === 0;
  const list = $("unplaced-list");
  list.replaceChildren(
    ...unplaced.map((stay) => {
      const item = el("li");
      const button = el("button", "button button--secondary button--small", `${fullName(stay.patient)} · NHS ${nhsSpaced(stay.patient.nhs_number)}`);
      button.setAttribute("type", "button");
      button.addEventListener("click", () => panels.openStay({ code: null, bay: "", kind: "", state: "", version: 0, stay }));
      item.append(button);
      return item;
    }),
  );
}

function summarise() {
  /** @type {Record<string, number>} */
  const counts = { occupied: 0, available: 0, dirty: 0, closed: 0, reserved: 0, today: 0 };
  const today = londonDate(new Date());
  for (const bed of beds) {
    counts[bed.state] = (counts[bed.state] ?? 0) + 1;
    if (bed.stay?.edd === today) counts.today += 1;
  }
  for (const key of Object.keys(counts)) {
    const cell = $(`count-${key}`);
    if (cell) cell.textContent = String(counts[key]);
  }
}

boardEl.addEventListener("click", (/** @type {MouseEvent} */ event) => {
  const card = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (event.target).closest(".bed-card"));
  const bed = card && beds.find((b) => b.code === card.dataset.bed);
  if (!bed) return;
  if (bed.stay) panels.openStay(bed);
  else panels.openBed(bed);
});

// --- live ----------------------------------------------------------------------------------------

/** @param {any} snap */
function applySnapshot(snap) {
  beds = snap.beds;
  unplaced = snap.unplaced ?? [];
  render();
}

const panels = setUpPanels({ ward, beds: () => beds, unplaced: () => unplaced, applySnapshot });

const live = new LiveWard({
  ward,
  view: "clinical",
  onSnapshot(frame) {
    applySnapshot(frame);
    $("board-updated").textContent = `Updated ${londonTime(new Date())}`;
    panels.onChange({});
  },
  onChange(frame) {
    if (frame.bed) beds = beds.map((b) => (b.code === frame.bed.code ? frame.bed : b));
    if (frame.unplaced) unplaced = frame.unplaced;
    render();
    $("board-updated").textContent = `Updated ${londonTime(new Date(frame.at))}`;
    panels.onChange(frame);
  },
  onStatus: (status) => banner.update(status),
  onAuthLost: () => {
    const stale = $("stale-banner");
    stale.hidden = false;
    stale.textContent = "Your session has ended. ";
    const link = el("a", "", "Sign in again");
    link.setAttribute("href", `/login?next=${encodeURIComponent(location.pathname)}`);
    stale.append(link);
  },
});

fillLegend();
keepSessionAlive();
live.start();
