/**
 * Colour parsing and the two colour scales: sequential (0 = background,
 * 1 = strong) and diverging (symmetric around 0, blue negative, red positive,
 * background at 0). Colours are [r, g, b] arrays of 0..255.
 */

/** Parse "#rgb", "#rrggbb(aa)", "rgb(...)"/"rgba(...)" (comma or space syntax). */
export function parseColor(text) {
  if (typeof text !== "string") return null;
  const s = text.trim().toLowerCase();
  let m = /^#([0-9a-f]{3,8})$/.exec(s);
  if (m) {
    let hex = m[1];
    if (hex.length === 3 || hex.length === 4) hex = [...hex].map((c) => c + c).join("");
    if (hex.length !== 6 && hex.length !== 8) return null;
    const a = hex.length === 8 ? Number.parseInt(hex.slice(6, 8), 16) / 255 : 1;
    return [0, 2, 4].map((i) => Number.parseInt(hex.slice(i, i + 2), 16)).concat(a);
  }
  m = /^rgba?\(([^)]*)\)$/.exec(s);
  if (m) {
    const parts = m[1].split(/[\s,/]+/).filter(Boolean);
    if (parts.length < 3) return null;
    const rgb = parts.slice(0, 3).map((p) => {
      const v = Number.parseFloat(p);
      return p.endsWith("%") ? (v * 255) / 100 : v;
    });
    let a = 1;
    if (parts.length > 3) {
      const p = parts[3];
      a = p.endsWith("%") ? Number.parseFloat(p) / 100 : Number.parseFloat(p);
    }
    if ([...rgb, a].some((v) => Number.isNaN(v))) return null;
    return [...rgb.map((v) => Math.round(Math.min(255, Math.max(0, v)))), a];
  }
  if (s === "white") return [255, 255, 255, 1];
  if (s === "black") return [0, 0, 0, 1];
  if (s === "transparent") return [0, 0, 0, 0];
  return null;
}

/** WCAG relative luminance of an sRGB colour, 0 (black) .. 1 (white). */
export function luminance([r, g, b]) {
  const lin = (c) => {
    const x = c / 255;
    return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

/** A background this dark needs light ramp ends. */
export function isDark(rgb) {
  return luminance(rgb) < 0.2;
}

/** Linear interpolation between two colours, t in [0, 1]. */
export function mix(a, b, t) {
  return [0, 1, 2].map((i) => Math.round(a[i] + (b[i] - a[i]) * t));
}

export function cssColor([r, g, b], alpha = 1) {
  return alpha === 1 ? `rgb(${r}, ${g}, ${b})` : `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

/** Black or white text, whichever reads better on `rgb`. */
export function textOn(rgb) {
  return luminance(rgb) > 0.35 ? [0, 0, 0] : [255, 255, 255];
}

/** The strong ends of the ramps for a light or a dark background. */
export function rampEnds(dark) {
  return dark
    ? { negative: [94, 166, 255], positive: [255, 102, 84], strong: [255, 196, 64] }
    : { negative: [33, 102, 172], positive: [178, 24, 43], strong: [8, 64, 150] };
}

function clamp(x, lo, hi) {
  return Math.min(hi, Math.max(lo, x));
}

function buildLut(count, colorAt) {
  const lut = new Uint8ClampedArray(count * 4);
  for (let i = 0; i < count; i++) {
    const [r, g, b] = colorAt(i / (count - 1));
    lut.set([r, g, b, 255], i * 4);
  }
  return lut;
}

/**
 * Sequential scale over [lo, hi]: lo is the background, hi the strong colour.
 * Returns { index(v), color(v), lut, levels, nan } for fast rasterising.
 */
export function sequentialScale(lo, hi, { background, strong, nan = [128, 128, 128] }) {
  const levels = 256;
  const span = hi > lo ? hi - lo : 1;
  const lut = buildLut(levels, (t) => mix(background, strong, t));
  const index = (v) => {
    const t = (v - lo) / span;
    return Math.round(clamp(t, 0, 1) * (levels - 1));
  };
  const color = (v) => {
    if (Number.isNaN(v)) return nan;
    const i = index(v) * 4;
    return [lut[i], lut[i + 1], lut[i + 2]];
  };
  return { index, color, lut, levels, nan, lo, hi };
}

/**
 * Diverging scale symmetric around 0 over [-maxAbs, maxAbs]: 0 is the
 * background, -maxAbs the negative (blue) end, +maxAbs the positive (red) end.
 * An odd number of levels puts 0 exactly on the middle entry.
 */
export function divergingScale(maxAbs, { background, negative, positive, nan = [128, 128, 128] }) {
  const levels = 257;
  const half = (levels - 1) / 2;
  const m = Number.isFinite(maxAbs) && maxAbs > 0 ? maxAbs : 1;
  const lut = buildLut(levels, (t) =>
    t < 0.5 ? mix(negative, background, t * 2) : mix(background, positive, (t - 0.5) * 2),
  );
  const index = (v) => {
    const t = v / m;
    return Math.round(half + clamp(t, -1, 1) * half);
  };
  const color = (v) => {
    if (Number.isNaN(v)) return nan;
    const i = index(v) * 4;
    return [lut[i], lut[i + 1], lut[i + 2]];
  };
  return { index, color, lut, levels, nan, lo: -m, hi: m };
}

/** Largest |v| over finite entries of `data[start, end)`; 0 when there are none. */
export function maxAbs(data, start = 0, end = data.length) {
  let m = 0;
  for (let i = start; i < end; i++) {
    const a = Math.abs(data[i]);
    if (a > m && a !== Number.POSITIVE_INFINITY) m = a;
  }
  return m;
}

/** [min, max] over finite entries of `data[start, end)`; [NaN, NaN] when there are none. */
export function extent(data, start = 0, end = data.length) {
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (let i = start; i < end; i++) {
    const v = data[i];
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : [Number.NaN, Number.NaN];
}
