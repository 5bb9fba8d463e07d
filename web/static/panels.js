// @ts-check
/**
 * The tablet board's edit panels: one for a patient's stay, one for an empty bed.
 *
 * Every write goes through the API. Stay and bed edits carry If-Match with the version the
 * panel was filled from; when someone else saved first the API answers 412 and changes
 * nothing: the panel says "Changed by someone else", shows the latest record and lists what
 * was not saved. A live change to the open record refreshes the panel unless the person has
 * started editing it.
 */

import { ApiError, api, explain, wardSnapshot } from "./api.js";
import { STATE_LABELS, bedLabel, byId, el, fullName, nhsSpaced } from "./format.js";
import { londonDate, londonTime } from "./live.js";
import { flagSymbols } from "./symbols.js";

/**
 * @typedef {{
 *   ward: string,
 *   beds: () => any[],
 *   unplaced: () => any[],
 *   applySnapshot: (snapshot: any) => void,
 * }} Board
 */

/** @param {Board} board */
export function setUpPanels(board) {
  const ward = board.ward;
  const $ = byId;
  const stayPanel = /** @type {HTMLDialogElement} */ ($("stay-panel"));
  const bedPanel = /** @type {HTMLDialogElement} */ ($("bed-panel"));
  const stayForm = /** @type {HTMLFormElement} */ ($("stay-form"));
  const ALERT_LABELS = Object.fromEntries(
    [...document.querySelectorAll('input[name="alerts"]')].map((input) => [
      /** @type {HTMLInputElement} */ (input).value,
      input.parentElement?.textContent?.trim() ?? "",
    ]),
  );
  /** The stay the panel edits, as it was when loaded: its version goes in If-Match. @type {any} */
  let panelStay = null;
  /** @type {any} */
  let panelBed = null;

  /** @param {string} code */
  const bedLabel_ = (code) => bedLabel(code, ward);

  // --- the stay panel ------------------------------------------------------------------------------

  /** @param {string} name */
  function field(name) {
    return /** @type {any} */ (stayForm.elements.namedItem(name));
  }

  /** @param {any} stay */
  function fillStayForm(stay) {
    const d = stay.discharge ?? {};
    field("edd").value = stay.edd ?? "";
    field("news2").value = stay.news2 ?? "";
    field("named_nurse").value = stay.named_nurse ?? "";
    field("consultant").value = stay.consultant ?? "";
    for (const radio of stayForm.querySelectorAll('input[name="day_status"]')) {
      const input = /** @type {HTMLInputElement} */ (radio);
      input.checked = input.value === (stay.day_status ?? "");
    }
    for (const box of stayForm.querySelectorAll('input[name="alerts"]')) {
      const input = /** @type {HTMLInputElement} */ (box);
      input.checked = (stay.alerts ?? []).includes(input.value);
    }
    field("medically_optimised").checked = Boolean(d.medically_optimised);
    field("tto_ready").checked = Boolean(d.tto_ready);
    field("transport_booked").checked = Boolean(d.transport_booked);
    field("home_first").checked = Boolean(d.home_first);
    field("pathway").value = d.pathway === null || d.pathway === undefined ? "" : String(d.pathway);
    field("blockers").value = d.blockers ?? "";
  }

  /** What the form says, in the API's terms. */
  function readStayForm() {
    const day = /** @type {HTMLInputElement | null} */ (stayForm.querySelector('input[name="day_status"]:checked'));
    const news = field("news2").value.trim();
    const pathway = field("pathway").value;
    return {
      edd: field("edd").value || null,
      news2: news === "" ? null : Number(news),
      named_nurse: field("named_nurse").value.trim() || null,
      consultant: field("consultant").value.trim() || null,
      day_status: day && day.value ? day.value : null,
      alerts: [...stayForm.querySelectorAll('input[name="alerts"]:checked')].map((i) => /** @type {HTMLInputElement} */ (i).value),
      discharge: {
        medically_optimised: field("medically_optimised").checked,
        tto_ready: field("tto_ready").checked,
        transport_booked: field("transport_booked").checked,
        home_first: field("home_first").checked,
        pathway: pathway === "" ? null : Number(pathway),
        blockers: field("blockers").value.trim(),
      },
    };
  }

  /** Only what the person changed since the panel was filled. @param {any} stay */
  function changesFrom(stay) {
    const now = readStayForm();
    /** @type {Record<string, any>} */
    const changes = {};
    for (const key of ["edd", "news2", "named_nurse", "consultant", "day_status"]) {
      if ((stay[key] ?? null) !== /** @type {any} */ (now)[key]) changes[key] = /** @type {any} */ (now)[key];
    }
    const before = [...(stay.alerts ?? [])].sort().join(",");
    if (before !== [...now.alerts].sort().join(",")) changes.alerts = now.alerts;
    /** @type {Record<string, any>} */
    const discharge = {};
    const was = stay.discharge ?? {};
    for (const [key, value] of Object.entries(now.discharge)) {
      const old = key === "blockers" ? was[key] ?? "" : key === "pathway" ? was[key] ?? null : Boolean(was[key]);
      if (old !== value) discharge[key] = value;
    }
    if (Object.keys(discharge).length) changes.discharge = discharge;
    return changes;
  }

  /** @param {Record<string, any>} changes */
  function describe(changes) {
    const parts = [];
    for (const [key, value] of Object.entries(changes)) {
      if (key === "discharge") {
        for (const [k, v] of Object.entries(value)) parts.push(`${k.replaceAll("_", " ")}: ${v === "" ? "(empty)" : v}`);
      } else {
        parts.push(`${key.replaceAll("_", " ")}: ${Array.isArray(value) ? value.map((a) => ALERT_LABELS[a] || a).join(", ") || "none" : value ?? "(empty)"}`);
      }
    }
    return parts.join("; ");
  }

  /** @param {any} stay */
  function fillFacts(stay) {
    const p = stay.patient;
    const rows = [
      ["Name", `${p.given_name} ${p.family_name}`],
      ["NHS number", nhsSpaced(p.nhs_number)],
      ["Hospital number", p.mrn],
      ["Date of birth", p.dob ?? "not recorded"],
      ["Admitted", stay.admitted_at ? `${londonDate(new Date(stay.admitted_at))} ${londonTime(new Date(stay.admitted_at))}` : ""],
    ];
    const facts = $("patient-facts");
    facts.replaceChildren();
    for (const [term, value] of rows) facts.append(el("dt", "", term), el("dd", "", value));
    if ((stay.flags ?? []).length) {
      const dd = el("dd");
      dd.append(...flagSymbols(stay.flags), el("span", "", ` ${stay.flags.map((/** @type {any} */ f) => `${f.code} (${f.status}, ${f.precaution})`).join("; ")}`));
      facts.append(el("dt", "", "Infection flags"), dd);
    }
  }

  /** @param {any} bed */
  function openStay(bed) {
    panelBed = bed;
    panelStay = bed.stay;
    $("stay-title").textContent = bed.code ? `Bed ${bedLabel_(bed.code)}: ${fullName(bed.stay.patient)}` : fullName(bed.stay.patient);
    $("conflict").hidden = true;
    setStatus("stay-status", "");
    setStatus("move-status", "");
    setStatus("flag-status", "");
    fillFacts(bed.stay);
    fillStayForm(bed.stay);
    fillTransferBeds();
    const confirm = $("discharge-confirm");
    if (confirm) confirm.hidden = true;
    if (!stayPanel.open) stayPanel.showModal();
  }

  /**
   * @param {string} id
   * @param {string} text
   * @param {"ok" | "error" | ""} [kind]
   */
  function setStatus(id, text, kind = "") {
    const node = $(id);
    if (!node) return;
    node.textContent = text;
    node.className = `status-message${kind ? ` status-message--${kind}` : ""}`;
    if (kind === "error" && text.startsWith("Your session has ended")) {
      const link = el("a", "", " Sign in");
      link.setAttribute("href", `/login?next=${encodeURIComponent(location.pathname)}`);
      node.append(link);
    }
  }

  stayForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!panelStay) return;
    const changes = changesFrom(panelStay);
    if (Object.keys(changes).length === 0) {
      setStatus("stay-status", "Nothing has changed.");
      return;
    }
    setStatus("stay-status", "Saving…");
    try {
      const saved = await api("PATCH", `/api/v1/stays/${encodeURIComponent(panelStay.id)}`, changes, { ifMatch: panelStay.version });
      panelStay = saved;
      $("conflict").hidden = true;
      fillFacts(saved);
      setStatus("stay-status", `Saved at ${londonTime(new Date())}.`, "ok");
    } catch (error) {
      if (error instanceof ApiError && error.status === 412) await showConflict(changes);
      else setStatus("stay-status", explain(error), "error");
    }
  });

  /** Someone else saved first: show the latest and what was not saved; overwrite nothing. @param {Record<string, any>} mine */
  async function showConflict(mine) {
    const id = panelStay.id;
    try {
      const snap = await wardSnapshot(ward);
      board.applySnapshot(snap);
      const latest = [...snap.beds.map((/** @type {any} */ b) => b.stay), ...snap.unplaced].find((s) => s && s.id === id);
      if (latest) {
        panelStay = latest;
        fillFacts(latest);
        fillStayForm(latest);
      }
    } catch (error) {
      setStatus("stay-status", explain(error), "error");
    }
    $("conflict-mine").textContent = `Not saved: ${describe(mine)}.`;
    $("conflict").hidden = false;
    setStatus("stay-status", "Changed by someone else: nothing was saved.", "error");
    $("conflict").scrollIntoView({ block: "nearest" });
  }

  function fillTransferBeds() {
    const select = $("f-transfer-bed");
    if (!select) return;
    const free = board.beds().filter((b) => !b.stay && (b.state === "available" || b.state === "reserved"));
    select.replaceChildren(
      ...free.map((b) => {
        const option = el("option", "", `Bed ${bedLabel_(b.code)} (${STATE_LABELS[b.state].toLowerCase()})`);
        option.setAttribute("value", b.code);
        return option;
      }),
    );
    if (free.length === 0) select.append(el("option", "", "No free bed on this ward"));
  }

  $("transfer-form")?.addEventListener("submit", async (/** @type {SubmitEvent} */ event) => {
    event.preventDefault();
    const target = $("f-transfer-bed").value;
    if (!panelStay || !board.beds().some((b) => b.code === target)) return;
    setStatus("move-status", "Moving…");
    try {
      await api("POST", `/api/v1/stays/${encodeURIComponent(panelStay.id)}/transfer`, { bed: target });
      setStatus("move-status", `Moved to bed ${bedLabel_(target)}.`, "ok");
      stayPanel.close();
    } catch (error) {
      setStatus("move-status", explain(error), "error");
    }
  });

  $("discharge")?.addEventListener("click", () => {
    $("discharge-confirm").hidden = false;
    $("discharge-confirm").focus();
  });

  $("discharge-confirm")?.addEventListener("click", async () => {
    if (!panelStay) return;
    setStatus("move-status", "Discharging…");
    try {
      await api("POST", `/api/v1/stays/${encodeURIComponent(panelStay.id)}/discharge`, {});
      stayPanel.close();
    } catch (error) {
      setStatus("move-status", explain(error), "error");
    }
  });

  $("flag-form")?.addEventListener("submit", async (/** @type {SubmitEvent} */ event) => {
    event.preventDefault();
    if (!panelStay) return;
    const form = /** @type {HTMLFormElement} */ (event.target);
    const data = new FormData(form);
    const body = { code: data.get("code"), status: data.get("status") ?? "suspected", precaution: data.get("precaution") };
    setStatus("flag-status", "Raising…");
    try {
      const flag = await api("POST", `/api/v1/patients/${encodeURIComponent(panelStay.patient.id)}/flags`, body);
      setStatus("flag-status", `${flag.code} flag raised (${flag.status}).`, "ok");
    } catch (error) {
      setStatus("flag-status", explain(error), "error");
    }
  });

  // --- the empty-bed panel -----------------------------------------------------------------------

  /** @param {any} bed */
  function openBed(bed) {
    panelBed = bed;
    $("bed-title").textContent = `Bed ${bedLabel_(bed.code)}`;
    $("bed-state-now").textContent = `This bed is ${STATE_LABELS[bed.state].toLowerCase()}.`;
    for (const radio of document.querySelectorAll('#bed-form input[name="state"]')) {
      const input = /** @type {HTMLInputElement} */ (radio);
      input.checked = input.value === bed.state;
    }
    setStatus("bed-status", "");
    setStatus("admit-status", "");
    $("admit-form")?.reset();
    if (!bedPanel.open) bedPanel.showModal();
  }

  $("bed-form")?.addEventListener("submit", async (/** @type {SubmitEvent} */ event) => {
    event.preventDefault();
    const chosen = /** @type {HTMLInputElement | null} */ (document.querySelector('#bed-form input[name="state"]:checked'));
    if (!panelBed || !chosen) return;
    try {
      const saved = await api("PATCH", `/api/v1/beds/${encodeURIComponent(panelBed.code)}`, { state: chosen.value }, { ifMatch: panelBed.version });
      panelBed = saved;
      $("bed-state-now").textContent = `This bed is ${STATE_LABELS[saved.state].toLowerCase()}.`;
      setStatus("bed-status", "Saved.", "ok");
    } catch (error) {
      if (error instanceof ApiError && error.status === 412) {
        const latest = board.beds().find((b) => b.code === panelBed.code);
        if (latest) openBed(latest);
        setStatus("bed-status", "Changed by someone else: nothing was saved. The latest state is shown.", "error");
      } else {
        setStatus("bed-status", explain(error), "error");
      }
    }
  });

  $("admit-form")?.addEventListener("submit", async (/** @type {SubmitEvent} */ event) => {
    event.preventDefault();
    if (!panelBed) return;
    const data = new FormData(/** @type {HTMLFormElement} */ (event.target));
    const text = (/** @type {string} */ name) => String(data.get(name) ?? "").trim();
    const body = {
      bed: panelBed.code,
      patient: {
        nhs_number: text("nhs_number").replaceAll(/[\s-]/g, "") || null,
        mrn: text("mrn"),
        given_name: text("given_name"),
        family_name: text("family_name"),
        dob: text("dob") || null,
        sex: text("sex") || "unknown",
      },
      consultant: text("consultant") || null,
      named_nurse: text("named_nurse") || null,
      edd: text("edd") || null,
    };
    if (!body.patient.mrn || !body.patient.given_name || !body.patient.family_name) {
      setStatus("admit-status", "Please give the given name, family name and hospital number.", "error");
      return;
    }
    setStatus("admit-status", "Admitting…");
    try {
      await api("POST", "/api/v1/stays", body);
      bedPanel.close();
    } catch (error) {
      setStatus("admit-status", explain(error), "error");
    }
  });

  for (const button of document.querySelectorAll("[data-close]")) {
    button.addEventListener("click", () => /** @type {HTMLDialogElement} */ (button.closest("dialog")).close());
  }

  /** A live change to the record the panel shows: refresh it unless the person is mid-edit. */
  function refreshPanel() {
    if (!stayPanel.open || !panelStay) return;
    const latest = [...board.beds().map((b) => b.stay), ...board.unplaced()].find((s) => s && s.id === panelStay.id);
    if (!latest || latest.version === panelStay.version) return;
    if (Object.keys(changesFrom(panelStay)).length === 0) {
      panelStay = latest;
      fillFacts(latest);
      fillStayForm(latest);
    }
  }

  return {
    openStay,
    openBed,
    /** A live change: the open panels follow it. @param {any} frame */
    onChange(frame) {
      if (bedPanel.open && panelBed && frame.bed && frame.bed.code === panelBed.code && frame.bed.stay) bedPanel.close();
      refreshPanel();
    },
  };
}
