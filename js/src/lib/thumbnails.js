/**
 * The 8-bit head thumbnails AttentionView receives, `[heads, tq, tk]`: each
 * head's `[q, k]` weights max-pooled into blocks of ceil(q / tq) x ceil(k / tk)
 * weights (the last blocks may be smaller), then scaled so that 255 is the
 * head's own largest weight and 0 is 0.
 */

/** Rows (or columns) of weights per thumbnail cell. */
export function blockSize(count, cells) {
  return cells > 0 ? Math.ceil(count / cells) : 1;
}

/** The thumbnail cell of each of `count` rows (or columns). */
function cellOf(count, cells) {
  const block = blockSize(count, cells);
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.min(cells - 1, Math.floor(i / block));
  return out;
}

/**
 * Head `head` of `thumbs` ({ data, shape: [heads, tq, tk] }) blown up to q x k
 * bytes: each weight gets the byte of the cell that covers it.
 */
export function expandThumbnail(thumbs, head, q, k) {
  const [, tq, tk] = thumbs.shape;
  const rows = cellOf(q, tq);
  const cols = cellOf(k, tk);
  const out = new Uint8Array(q * k);
  const base = head * tq * tk;
  for (let i = 0; i < q; i++) {
    const o = i * k;
    if (i > 0 && rows[i] === rows[i - 1]) {
      out.copyWithin(o, o - k, o);
      continue;
    }
    const src = base + rows[i] * tk;
    for (let j = 0; j < k; j++) out[o + j] = thumbs.data[src + cols[j]];
  }
  return out;
}

/**
 * The thumbnail the kernel makes of one head's q x k `values`, as tq x tk bytes;
 * `nan` says whether a weight was NaN (then the kernel's bytes are undefined).
 */
export function thumbnailOf(values, q, k, tq, tk) {
  const rows = cellOf(q, tq);
  const cols = cellOf(k, tk);
  const cells = new Float64Array(tq * tk); // 0: negative weights and padding count as 0
  let nan = false;
  for (let i = 0; i < q; i++) {
    const row = rows[i] * tk;
    const o = i * k;
    for (let j = 0; j < k; j++) {
      const v = values[o + j];
      const c = row + cols[j];
      if (v > cells[c]) cells[c] = v;
      else if (Number.isNaN(v)) nan = true;
    }
  }
  let peak = 1e-12;
  for (const v of cells) if (v > peak) peak = v;
  const bytes = new Uint8Array(tq * tk);
  for (let c = 0; c < cells.length; c++) bytes[c] = Math.round((cells[c] / peak) * 255) || 0;
  return { bytes, nan };
}

/**
 * Whether the q x k `values` are head `head` of `thumbs`: their own thumbnail is
 * within `tolerance` of that head's in every cell. A head click changes `head`
 * at once while its values arrive from the kernel a moment later, so this keeps
 * the previous head's weights from being shown (and hovered) as the new head's.
 */
export function matchesThumbnail(values, q, k, thumbs, head, tolerance = 2) {
  const [, tq, tk] = thumbs.shape;
  const { bytes, nan } = thumbnailOf(values, q, k, tq, tk);
  if (nan) return true; // the kernel's thumbnail of NaN weights says nothing
  const base = head * tq * tk;
  for (let c = 0; c < bytes.length; c++) {
    if (Math.abs(bytes[c] - thumbs.data[base + c]) > tolerance) return false;
  }
  return true;
}
