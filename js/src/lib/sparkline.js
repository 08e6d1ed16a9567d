/** A histogram as a tiny inline SVG: one <path> of bars, whatever the bin count. */

const SVG = "http://www.w3.org/2000/svg";

/** The path data of `hist` as bars filling width x height (bars grow upward). */
export function sparklinePath(hist, width, height) {
  const counts = Array.isArray(hist) ? hist.map((c) => Math.max(0, Number(c) || 0)) : [];
  const peak = Math.max(0, ...counts);
  if (!counts.length || peak === 0) return "";
  const bar = width / counts.length;
  let d = "";
  counts.forEach((c, i) => {
    if (c === 0) return;
    const barHeight = Math.max(0.5, (c / peak) * height);
    const x = (i * bar).toFixed(2);
    d += `M${x} ${height}h${bar.toFixed(2)}v${(-barHeight).toFixed(2)}h${(-bar).toFixed(2)}z`;
  });
  return d;
}

export function sparkline(hist, { width = 48, height = 14, title = "" } = {}) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "nnsight-sparkline");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("aria-hidden", "true");
  if (title) {
    const t = document.createElementNS(SVG, "title");
    t.textContent = title;
    svg.append(t);
  }
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", sparklinePath(hist, width, height));
  svg.append(path);
  return svg;
}
