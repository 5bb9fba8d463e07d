// @ts-check
/**
 * The trust-wide IPC board: every active flag, placement conflicts and free side rooms.
 *
 * Live: it listens to every ward's socket and reloads GET /api/v1/ipc (debounced) whenever a
 * ward changes; a flag on a patient who is not admitted changes no ward, so it also reloads
 * every 30 s. Actions the role cannot take are not on the page (the API decides anyway).
 */

import { ApiError, api, explain, keepSessionAlive, wardSnapshot } from "./api.js";
import { byId, el, fullName, nhsSpaced } from "./format.js";
import { StaleBanner, londonTime, watchWards } from "./live.js";
import { fillLegend, precautionSymbol } from "./symbols.js";

const body = document.body;
const wards = (body.dataset.wards ?? "").split(" ").filter(Boolean);
const can = new Set((body.dataset.can ?? "").split(" ").filter(Boolean));
const $ = byId;

const name = fullName;

/** @param {any} flag */
function flagRow(flag) {
  const row = el("tr");
  row.dataset.flag = flag.id;
  const cells = [
    name(flag.patient),
    nhsSpaced(flag.patient.nhs_number),
    flag.code,
    flag.status === "confirmed" ? "Confirmed" : "Suspected",
  ];
  cells.forEach((text, i) => row.append(el("td", i === 1 ? "nowrap" : "", text)));
  const precaution = el("td");
  precaution.append(precautionSymbol(flag.precaution, flag.status), ` ${flag.precaution}`);
  row.append(precaution);
  row.append(el("td", "", flag.stay ? flag.stay.ward_name ?? flag.stay.ward : "Not admitted"));
  row.append(el("td", "nowrap", flag.stay?.bed ?? "–"));
  row.append(el("td", "num", flag.days === null ? "–" : String(flag.days)));
  if (can.has("update_flag")) {
    const actions = el("td");
    const box = el("div", "row-actions");
    if (flag.status === "suspected") box.append(actionButton(flag, "confirmed", "Confirm"));
    box.append(actionButton(flag, "cleared", "Clear"));
    actions.append(box);
    row.append(actions);
  }
  return row;
}

/**
 * @param {any} flag
 * @param {string} status
 * @param {string} label
 */
function actionButton(flag, status, label) {
  const button = el("button", `button button--small ${status === "cleared" ? "button--secondary" : ""}`, label);
  button.setAttribute("type", "button");
  button.setAttribute("aria-label", `${label} ${flag.code} for ${name(flag.patient)}`);
  button.addEventListener("click", async () => {
    button.setAttribute("disabled", "");
    try {
      await api("PATCH", `/api/v1/flags/${encodeURIComponent(flag.id)}`, { status }, { ifMatch: flag.version });
      $("flags-status").textContent = `${flag.code} for ${name(flag.patient)} ${status}.`;
    } catch (error) {
      $("flags-status").textContent =
        error instanceof ApiError && error.status === 412
          ? "Changed by someone else: nothing was saved. The latest is shown."
          : explain(error);
    }
    await load();
  });
  return button;
}

/** @param {any} conflict @param {Map<string, any>} rooms */
function conflictCard(conflict, rooms) {
  const card = el("article", "card card--warning");
  card.append(el("h3", "", name(conflict.patient)));
  const line = el("p");
  line.append(...conflict.flags.map((/** @type {any} */ f) => precautionSymbol(f.precaution, f.status)));
  line.append(
    ` ${conflict.flags.map((/** @type {any} */ f) => `${f.code} (${f.status}, ${f.precaution})`).join("; ")}`,
  );
  card.append(line);
  card.append(el("p", "", `In an open bay: ${conflict.stay.ward_name} (${conflict.stay.ward}), bed ${conflict.stay.bed}.`));
  const free = rooms.get(conflict.stay.ward)?.free ?? [];
  card.append(
    el("p", "meta", free.length ? `Free side rooms on this ward: ${free.map((/** @type {any} */ r) => r.code).join(", ")}` : "No free side room on this ward."),
  );
  return card;
}

/** @param {any} data */
function render(data) {
  const tbody = $("flags");
  if (data.flags.length === 0) {
    const row = el("tr");
    const cell = el("td", "", "No active flags.");
    cell.setAttribute("colspan", "9");
    row.append(cell);
    tbody.replaceChildren(row);
  } else {
    tbody.replaceChildren(...data.flags.map(flagRow));
  }
  const rooms = new Map(data.side_rooms.map((/** @type {any} */ r) => [r.ward, r]));
  const conflicts = $("conflicts");
  conflicts.replaceChildren(
    ...(data.conflicts.length ? data.conflicts.map((/** @type {any} */ c) => conflictCard(c, rooms)) : [el("p", "", "None: every patient who needs isolation has a side room.")]),
  );
  $("rooms").replaceChildren(
    ...data.side_rooms.map((/** @type {any} */ r) => {
      const row = el("tr");
      row.append(el("td", "", `${r.ward_name} (${r.ward})`), el("td", "", r.site), el("td", "num", String(r.free.length)), el("td", "num", String(r.total)));
      row.append(el("td", "", r.free.map((/** @type {any} */ f) => f.code).join(", ") || "–"));
      return row;
    }),
  );
  $("ipc-updated").textContent = `Updated ${londonTime(new Date(data.generated_at))}`;
}

let loading = false;
let again = false;

async function load() {
  if (loading) {
    again = true;
    return;
  }
  loading = true;
  try {
    render(await api("GET", "/api/v1/ipc"));
  } catch (error) {
    $("ipc-updated").textContent = explain(error);
  } finally {
    loading = false;
    if (again) {
      again = false;
      void load();
    }
  }
}

/** @type {ReturnType<typeof setTimeout> | null} */
let pending = null;
function soon() {
  if (pending === null) pending = setTimeout(() => {
    pending = null;
    void load();
  }, 250);
}

// --- raising a flag ------------------------------------------------------------------------------

const raiseForm = /** @type {HTMLFormElement | null} */ (document.getElementById("raise-form"));
$("r-ward")?.addEventListener("change", async () => {
  const select = $("r-patient");
  const ward = $("r-ward").value;
  select.replaceChildren(el("option", "", ward ? "Loading…" : "Choose a ward first"));
  if (!ward) return;
  try {
    const snap = await wardSnapshot(ward);
    const options = snap.beds
      .filter((/** @type {any} */ b) => b.stay)
      .map((/** @type {any} */ b) => {
        const option = el("option", "", `${name(b.stay.patient)} · bed ${b.code} · NHS ${nhsSpaced(b.stay.patient.nhs_number)}`);
        option.setAttribute("value", b.stay.patient.id);
        return option;
      });
    select.replaceChildren(...(options.length ? options : [el("option", "", "No patients on this ward")]));
  } catch (error) {
    select.replaceChildren(el("option", "", explain(error)));
  }
});

raiseForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(raiseForm);
  const patient = String(data.get("patient") ?? "");
  if (!patient) {
    $("raise-status").textContent = "Choose a ward and a patient.";
    return;
  }
  try {
    const flag = await api("POST", `/api/v1/patients/${encodeURIComponent(patient)}/flags`, {
      code: data.get("code"),
      status: data.get("status"),
      precaution: data.get("precaution"),
    });
    $("raise-status").textContent = `${flag.code} flag raised (${flag.status}).`;
    await load();
  } catch (error) {
    $("raise-status").textContent = explain(error);
  }
});

fillLegend();
keepSessionAlive();
void load();
watchWards(wards, soon, new StaleBanner($("stale-banner")));
setInterval(() => void load(), 30000);
