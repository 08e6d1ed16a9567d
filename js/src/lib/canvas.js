/** Canvas plumbing: sizing, painting RGBA pixels, and mapping pointer events to cells. */

/** No canvas side may exceed this many pixels; larger matrices are pooled down. */
export const MAX_CANVAS = 2048;

/** Whole-pixel cell size that fits `count` cells in about `budget` pixels, clamped. */
export function cellSize(count, budget, min, max) {
  if (count <= 0) return max;
  return Math.max(min, Math.min(max, Math.floor(budget / count)));
}

/** Pixels along one canvas axis for `count` cells of `cell` pixels (at least 1). */
export function axisPixels(count, cell) {
  return Math.max(1, Math.min(count * cell, MAX_CANVAS));
}

/** The 2D context, or null where there is none (a DOM without canvas support). */
export function context2d(canvas) {
  try {
    return canvas.getContext("2d") ?? null;
  } catch {
    return null;
  }
}

/** Resize `canvas` to width x height and put the RGBA `pixels` on it. */
export function paint(canvas, pixels, width, height) {
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const ctx = context2d(canvas);
  if (!ctx) return false;
  const image = ctx.createImageData(width, height);
  image.data.set(pixels);
  ctx.putImageData(image, 0, 0);
  return true;
}

/**
 * The { row, col } under a pointer event on a canvas showing rows x cols cells,
 * or null outside it. Uses the displayed size (CSS may scale the canvas); where
 * layout is unavailable (a zero-sized box) the canvas's own size stands in.
 */
export function cellAt(event, canvas, rows, cols) {
  const box = canvas.getBoundingClientRect();
  const width = box.width || canvas.width;
  const height = box.height || canvas.height;
  const x = event.clientX - box.left;
  const y = event.clientY - box.top;
  if (!(x >= 0 && y >= 0 && x < width && y < height) || rows === 0 || cols === 0) return null;
  return {
    row: Math.min(rows - 1, Math.floor((y / height) * rows)),
    col: Math.min(cols - 1, Math.floor((x / width) * cols)),
  };
}
