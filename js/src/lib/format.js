/** Number formatting shared by the widgets. */

const UNITS = ["", "K", "M", "B", "T"];

/** Parameter counts: 124439808 -> "124.4M", 2400 -> "2.4K", 999 -> "999". */
export function humanCount(n) {
  const value = Number(n);
  if (!Number.isFinite(value)) return "?";
  const sign = value < 0 ? "-" : "";
  let abs = Math.abs(value);
  if (abs < 1000) return sign + String(Math.round(abs));
  let unit = 0;
  while (abs >= 1000 && unit < UNITS.length - 1) {
    abs /= 1000;
    unit++;
  }
  // 999_960 would print as "1000.0K": carry into the next unit instead.
  if (Number(abs.toFixed(1)) >= 1000 && unit < UNITS.length - 1) {
    abs /= 1000;
    unit++;
  }
  return `${sign}${abs.toFixed(1)}${UNITS[unit]}`;
}

/** A value with `digits` significant digits; exponent form when very large or small. */
export function formatValue(v, digits = 4) {
  if (v == null) return "–";
  const x = Number(v);
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return "0";
  const abs = Math.abs(x);
  if (abs >= 1e5 || abs < 1e-3) return x.toExponential(digits - 1);
  return String(Number(x.toPrecision(digits)));
}

/** [1, 10, 768] -> "[1, 10, 768]". */
export function formatShape(shape) {
  return Array.isArray(shape) ? `[${shape.join(", ")}]` : "";
}
