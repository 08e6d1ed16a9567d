/**
 * Matrices to RGBA pixels, for ImageData: no DOM node per cell. Each cell is a
 * block of pixels when the canvas is larger than the matrix; when it is smaller,
 * each pixel shows the value of largest magnitude among the cells it covers,
 * so a single strong entry (an attention spike) never disappears.
 */

/** For each of `pixels` pixels, the [start, end) range of the `count` cells it covers. */
export function spans(count, pixels) {
  const start = new Int32Array(pixels);
  const end = new Int32Array(pixels);
  for (let p = 0; p < pixels; p++) {
    const s = Math.floor((p * count) / pixels);
    const e = Math.floor(((p + 1) * count) / pixels);
    start[p] = s;
    end[p] = e > s ? e : s + 1;
  }
  return { start, end };
}

/**
 * Rasterise the rows x cols matrix stored row-major in data[offset...] into a
 * width x height RGBA buffer using `scale` ({ index(v), lut, nan }).
 */
export function rasterize(data, offset, rows, cols, width, height, scale) {
  const out = new Uint8ClampedArray(width * height * 4);
  if (rows === 0 || cols === 0) return out;
  const rs = spans(rows, height);
  const cs = spans(cols, width);
  const { lut, index, nan } = scale;
  const stride = width * 4;
  for (let y = 0; y < height; y++) {
    const r0 = rs.start[y];
    const r1 = rs.end[y];
    const rowOut = y * stride;
    if (y > 0 && r0 === rs.start[y - 1] && r1 === rs.end[y - 1]) {
      out.copyWithin(rowOut, rowOut - stride, rowOut);
      continue;
    }
    for (let x = 0; x < width; x++) {
      const c0 = cs.start[x];
      const c1 = cs.end[x];
      let best = Number.NaN;
      let bestAbs = -1;
      for (let r = r0; r < r1; r++) {
        const base = offset + r * cols;
        for (let c = c0; c < c1; c++) {
          const v = data[base + c];
          if (Number.isNaN(v)) continue;
          const a = v < 0 ? -v : v;
          if (a > bestAbs) {
            bestAbs = a;
            best = v;
          }
        }
      }
      const o = rowOut + x * 4;
      if (bestAbs < 0) {
        out[o] = nan[0];
        out[o + 1] = nan[1];
        out[o + 2] = nan[2];
      } else {
        const i = index(best) * 4;
        out[o] = lut[i];
        out[o + 1] = lut[i + 1];
        out[o + 2] = lut[i + 2];
      }
      out[o + 3] = 255;
    }
  }
  return out;
}
