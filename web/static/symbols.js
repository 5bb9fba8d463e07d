// @ts-check
/**
 * Precaution symbols: a shape AND a colour AND a letter for each precaution, so they read
 * without colour vision (Okabe–Ito colours, safe for the common colour-blindnesses).
 * Confirmed flags are solid; suspected ones are pale with a dashed outline and a "?".
 * Symbols never name an organism: a wall screen does not even receive one.
 */

const SVG = "http://www.w3.org/2000/svg";

/** @type {Record<string, {shape: string, letter: string, label: string}>} */
export const PRECAUTIONS = {
  airborne: { shape: "diamond", letter: "A", label: "Airborne precautions" },
  droplet: { shape: "triangle", letter: "D", label: "Droplet precautions" },
  contact: { shape: "square", letter: "C", label: "Contact precautions" },
  standard: { shape: "circle", letter: "S", label: "Standard precautions" },
};

/** Most protective first. */
export const PRECAUTION_RANK = ["airborne", "droplet", "contact", "standard"];

/** @param {string} shape */
function shapeElement(shape) {
  if (shape === "circle") {
    const c = document.createElementNS(SVG, "circle");
    c.setAttribute("cx", "20");
    c.setAttribute("cy", "20");
    c.setAttribute("r", "17");
    return c;
  }
  const p = document.createElementNS(SVG, "polygon");
  const points = {
    square: "4,4 36,4 36,36 4,36",
    triangle: "20,2 38,37 2,37",
    diamond: "20,1 39,20 20,39 1,20",
  }[shape];
  p.setAttribute("points", points ?? "");
  return p;
}

/**
 * An inline SVG symbol for one precaution at one status.
 * @param {string} precaution
 * @param {string} status  "suspected" | "confirmed"
 */
export function precautionSymbol(precaution, status) {
  const spec = PRECAUTIONS[precaution] ?? PRECAUTIONS.standard;
  const suspected = status === "suspected";
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 40 40");
  svg.setAttribute("role", "img");
  svg.setAttribute("class", `psym psym--${precaution} psym--${suspected ? "suspected" : "confirmed"}`);
  svg.dataset.precaution = precaution;
  svg.dataset.status = status;
  const title = document.createElementNS(SVG, "title");
  title.textContent = `${spec.label}${suspected ? " (suspected)" : ""}`;
  svg.append(title);
  const shape = shapeElement(spec.shape);
  shape.setAttribute("class", "psym__shape");
  svg.append(shape);
  const text = document.createElementNS(SVG, "text");
  text.setAttribute("x", "20");
  text.setAttribute("y", spec.shape === "triangle" ? "31" : "27");
  text.setAttribute("text-anchor", "middle");
  text.setAttribute("class", "psym__letter");
  text.textContent = suspected ? `${spec.letter}?` : spec.letter;
  svg.append(text);
  return svg;
}

/**
 * One symbol per precaution a patient's active flags need, most protective first
 * (a confirmed flag wins over a suspected one of the same precaution).
 * @param {{status: string, precaution: string}[]} flags
 */
export function flagSymbols(flags) {
  /** @type {Map<string, string>} */
  const best = new Map();
  for (const f of flags) {
    if (f.status === "cleared") continue;
    if (best.get(f.precaution) !== "confirmed") best.set(f.precaution, f.status);
  }
  return PRECAUTION_RANK.filter((p) => best.has(p)).map((p) => precautionSymbol(p, best.get(p) ?? "suspected"));
}

/** Fill every `[data-precaution]` placeholder (legends in server-rendered HTML). */
export function fillLegend(root = document) {
  root.querySelectorAll("span[data-precaution]").forEach((el) => {
    if (!(el instanceof HTMLElement) || el.querySelector("svg")) return;
    el.append(precautionSymbol(el.dataset.precaution ?? "standard", el.dataset.status ?? "confirmed"));
  });
}
