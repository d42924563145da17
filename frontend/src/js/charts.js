// Plots of the lead pages, drawn in the browser with Chart.js. Every plot is readable without
// hovering: the values are printed on the bars and points (chartjs-plugin-datalabels), the axes
// have titles, and a legend names every series. The heat map is an HTML table whose cells
// carry their numbers, coloured on a colour-blind-safe sequential scale (viridis).
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import ChartDataLabels from "chartjs-plugin-datalabels";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, LineController, LineElement, PointElement, Legend, Tooltip, ChartDataLabels);
Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
Chart.defaults.font.size = 13;
Chart.defaults.color = "#1d2330";
Chart.defaults.animation = false; // drawn at once: nothing to wait for, nothing moving

/** Okabe-Ito colours: distinguishable with every common colour-vision deficiency. */
export const SERIES_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];

const axisTitle = (text) => ({ display: true, text, font: { weight: "bold" } });

/**
 * A grouped bar chart of fractions (0..1) with every value printed above its bar.
 * @param {HTMLCanvasElement} canvas
 * @param {object} spec
 * @param {string[]} spec.categories x-axis categories (one group of bars each)
 * @param {Array<{name:string, values:Array<number|null>, colour?:string}>} spec.series
 * @param {string} spec.xTitle
 * @param {string} spec.yTitle
 * @param {number} [spec.digits] decimals printed
 * @returns {Chart}
 */
export function barChart(canvas, { categories, series, xTitle, yTitle, digits = 2 }) {
  return new Chart(canvas, {
    type: "bar",
    data: {
      labels: categories,
      datasets: series.map((s, i) => ({
        label: s.name,
        data: s.values,
        backgroundColor: s.colour || SERIES_COLOURS[i % SERIES_COLOURS.length],
      })),
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      layout: { padding: { top: 4 } },
      scales: {
        x: { title: axisTitle(xTitle), ticks: { font: { weight: "bold" } } },
        y: {
          title: axisTitle(yTitle),
          min: 0,
          max: 1.12, // room for the printed values above bars that reach 1
          ticks: { stepSize: 0.2, callback: (value) => (value <= 1 ? Number(value).toFixed(1) : "") },
        },
      },
      plugins: {
        legend: { position: "top" },
        datalabels: {
          anchor: "end",
          align: "end",
          offset: 1,
          clamp: true,
          color: "#1d2330",
          font: { size: 11, weight: "bold" },
          formatter: (value) => (typeof value === "number" ? value.toFixed(digits) : "n/a"),
        },
      },
    },
  });
}

/**
 * A line chart of fractions over categories (e.g. days), one line per series, every point's
 * value printed beside it.
 * @param {HTMLCanvasElement} canvas
 * @param {object} spec
 * @param {string[]} spec.categories
 * @param {Array<{name:string, values:Array<number|null>, colour?:string}>} spec.series
 * @param {string} spec.xTitle
 * @param {string} spec.yTitle
 * @returns {Chart}
 */
export function lineChart(canvas, { categories, series, xTitle, yTitle, digits = 2 }) {
  const values = series.flatMap((s) => s.values).filter((v) => typeof v === "number");
  const low = values.length ? Math.min(...values) : 0;
  return new Chart(canvas, {
    type: "line",
    data: {
      labels: categories,
      datasets: series.map((s, i) => {
        const colour = s.colour || SERIES_COLOURS[i % SERIES_COLOURS.length];
        return {
          label: s.name,
          data: s.values,
          borderColor: colour,
          backgroundColor: colour,
          pointRadius: 5,
          pointHoverRadius: 7,
          borderWidth: 2,
          spanGaps: true,
        };
      }),
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      layout: { padding: { top: 8, right: 24, left: 8 } },
      scales: {
        x: { title: axisTitle(xTitle), offset: true },
        y: {
          title: axisTitle(yTitle),
          min: Math.max(0, Math.floor((low - 0.05) * 10) / 10),
          max: 1.05,
          ticks: { callback: (value) => (value <= 1 ? Number(value).toFixed(2) : "") },
        },
      },
      plugins: {
        legend: { position: "top" },
        datalabels: {
          display: "auto", // printed unless two labels would overlap
          align: "top",
          offset: 4,
          color: (context) => context.dataset.borderColor,
          font: { size: 11, weight: "bold" },
          formatter: (value) => (typeof value === "number" ? value.toFixed(digits) : ""),
        },
      },
    },
  });
}

// --- heat map -------------------------------------------------------------------------------

// Viridis, sampled at 9 stops (matplotlib's colormap; perceptually uniform, colour-blind-safe).
const VIRIDIS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];

/** The viridis colour of ``t`` in [0, 1], as [r, g, b]. */
export function viridis(t) {
  const x = Math.max(0, Math.min(1, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}

/** Black or white, whichever reads better on ``rgb``. */
export function textColourOn([r, g, b]) {
  return 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#000000" : "#ffffff";
}

/** A colour domain [lo, 1] for Dice values: from just below the lowest value (a tenth) to 1. */
export function diceDomain(values) {
  const finite = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  if (!finite.length) return [0, 1];
  const lo = Math.min(Math.floor(Math.min(...finite) * 10) / 10, 0.9);
  return [lo, 1];
}

/**
 * Fill ``table`` with a square heat map: rows and columns are ``names``, each cell prints its
 * value (and its count), coloured by value.
 * @param {HTMLTableElement} table
 * @param {object} spec
 * @param {string[]} spec.names
 * @param {(a: string, b: string) => ({value:number|null, n?:number}|null)} spec.valueOf
 * @param {[number, number]} spec.domain value range of the colour scale
 * @param {number} [spec.digits]
 * @param {(name: string) => string} [spec.nameLabel] how a row/column header reads
 */
export function heatMap(table, { names, valueOf, domain, digits = 3, nameLabel = (n) => n }) {
  const [lo, hi] = domain;
  const thead = document.createElement("thead");
  const headRow = document.createElement("tr");
  const corner = document.createElement("th");
  corner.className = "corner";
  headRow.append(corner);
  for (const name of names) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = nameLabel(name);
    headRow.append(th);
  }
  thead.append(headRow);
  const tbody = document.createElement("tbody");
  for (const a of names) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = nameLabel(a);
    tr.append(th);
    for (const b of names) {
      const td = document.createElement("td");
      td.dataset.raterA = a;
      td.dataset.raterB = b;
      const entry = a === b ? null : valueOf(a, b);
      if (a === b) {
        td.className = "diagonal";
        td.textContent = "—";
        td.title = "the same rater";
      } else if (!entry || typeof entry.value !== "number") {
        td.className = "missing";
        td.textContent = "n/a";
        td.title = "these raters never rated the same scan";
      } else {
        const rgb = viridis((entry.value - lo) / (hi - lo || 1));
        td.style.background = `rgb(${rgb.join(",")})`;
        td.style.color = textColourOn(rgb);
        td.dataset.value = String(entry.value);
        const value = document.createElement("strong");
        value.textContent = entry.value.toFixed(digits);
        td.append(value);
        if (entry.n !== undefined) {
          const n = document.createElement("small");
          n.textContent = `n = ${entry.n}`;
          td.append(n);
        }
        td.title = `${a} vs ${b}: mean Dice ${entry.value.toFixed(digits)} over ${entry.n ?? "?"} scan-label pairs`;
      }
      tr.append(td);
    }
    tbody.append(tr);
  }
  table.replaceChildren(thead, tbody);
}

/** A horizontal colour bar for the heat map's scale, with its end values printed. */
export function colourBar(container, [lo, hi], { title = "", digits = 2 } = {}) {
  const stops = Array.from({ length: 11 }, (_, i) => `rgb(${viridis(i / 10).join(",")}) ${i * 10}%`);
  const bar = document.createElement("div");
  bar.className = "colour-bar";
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  const ticks = document.createElement("div");
  ticks.className = "colour-bar-ticks";
  const mid = (lo + hi) / 2;
  for (const value of [lo, mid, hi]) {
    const span = document.createElement("span");
    span.textContent = value.toFixed(digits);
    ticks.append(span);
  }
  const caption = document.createElement("div");
  caption.className = "colour-bar-title";
  caption.textContent = title;
  container.replaceChildren(caption, bar, ticks);
}
