/**
 * AttentionView: one layer's attention as a grid of head thumbnails and the
 * selected head large, with token-to-token hover. Exact float32 weights come
 * only for the selected head (`values`, [q, k]); the grid is drawn from 8-bit
 * max-pooled thumbnails (`thumbnails`, [heads, tq, tk], 255 = the head's max).
 * Until the kernel sends a newly picked head's values, or when it never will (a
 * saved notebook), the large view shows that head's thumbnail blown up.
 * Matrices are drawn through ImageData (one pixel block per cell), so 500+
 * tokens stay fast; token labels appear only when cells are big enough.
 */
import { decodeBytes, decodeTensor, product } from "./lib/buffers.js";
import { axisPixels, cellAt, cellSize, context2d, paint } from "./lib/canvas.js";
import { cssColor, extent, sequentialScale } from "./lib/colors.js";
import { h, listen, setClass } from "./lib/dom.js";
import { batched, onChange, readInt, readList, save } from "./lib/model.js";
import { rasterize } from "./lib/raster.js";
import { resolveTheme, watchTheme } from "./lib/theme.js";
import { blockSize, expandThumbnail, matchesThumbnail } from "./lib/thumbnails.js";
import { showWhitespace, tokenLabel } from "./lib/tokens.js";
import { createTooltip } from "./lib/tooltip.js";
import { mountRoot, teardown } from "./lib/widget.js";
import css from "./styles/attention_view.css?raw";

const THUMB_PX = 72;
const MAIN_PX = 560;
const LABEL_MIN_CELL = 12;

/** The tooltip line for query i, key j; `value` a weight, or text already formatted. */
export function attentionTooltip(queryTokens, keyTokens, i, j, value) {
  const q = showWhitespace(queryTokens[i] ?? String(i));
  const k = showWhitespace(keyTokens[j] ?? String(j));
  let v = String(value);
  if (typeof value === "number" && Number.isFinite(value)) v = value.toFixed(4);
  return `query "${q}" (${i}) → key "${k}" (${j}): ${v}`;
}

/** What a thumbnail byte says: a share of the head's max (of a block's max when pooled). */
export function previewValue(byte, pooled) {
  const share = `${Math.round((byte / 255) * 100)}% of head max`;
  return pooled ? `block max ≈ ${share}` : `≈ ${share}`;
}

/** Display size of a head thumbnail, keeping the q:k aspect (at least 8 px a side). */
function thumbSize(q, k) {
  const scale = THUMB_PX / Math.max(q, k, 1);
  return { width: Math.max(8, Math.round(k * scale)), height: Math.max(8, Math.round(q * scale)) };
}

/** The thumbnails, checked against `shape` [heads, q, k]: { data, shape } or { error }. */
function decodeThumbnails(value, thumbShape, [n, q, k]) {
  const thumbs = decodeBytes(value, thumbShape, 3, "thumbnails");
  if (thumbs.error) return thumbs;
  const [tn, tq, tk] = thumbs.shape;
  if (tn !== n || tq < 1 || tq > q || tk < 1 || tk > k) {
    const fit = `${JSON.stringify(thumbs.shape)} does not fit shape ${JSON.stringify([n, q, k])}`;
    return { error: `thumb_shape ${fit}` };
  }
  return thumbs;
}

function render({ model, el }) {
  const { root, stop: stopAttach } = mountRoot(el, "nnsight-attention-view", css, () =>
    redrawAll(),
  );
  const layerSelect = h("select", { class: "nnsight-layer-select", "aria-label": "layer" });
  const layerPicker = h("label", { class: "nnsight-layer-picker" }, ["layer ", layerSelect]);
  // View-only (not synced). Long sequences spread attention thin, so "head max"
  // (each head's ramp stretched to its largest weight) is the default; "0 – 1"
  // compares heads on one absolute scale.
  const scaleSelect = h("select", { class: "nnsight-scale-select", "aria-label": "colour scale" }, [
    h("option", { value: "max", text: "head max" }),
    h("option", { value: "unit", text: "0 – 1" }),
  ]);
  scaleSelect.value = "max";
  const scalePicker = h("label", { class: "nnsight-scale-picker" }, ["colour ", scaleSelect]);
  const headInfo = h("span", { class: "nnsight-head-info" });
  const dims = h("span", { class: "nnsight-muted nnsight-dims" });
  const note = h("span", {
    class: "nnsight-muted nnsight-preview-note",
    text: "8-bit preview",
    title:
      "This head's exact weights come from the kernel; until they arrive (or without a " +
      "kernel) its thumbnail is shown, scaled to the head's max.",
  });
  const heads = h("div", { class: "nnsight-heads", role: "listbox", "aria-label": "heads" });
  const keys = h("div", { class: "nnsight-keys" });
  const queries = h("div", { class: "nnsight-queries" });
  const main = h("canvas", { class: "nnsight-attention-main", "aria-label": "attention pattern" });
  const overlay = h("canvas", { class: "nnsight-overlay", "aria-hidden": "true" });
  const matrix = h("div", { class: "nnsight-matrix" }, [
    keys,
    queries,
    h("div", { class: "nnsight-stack" }, [main, overlay]),
  ]);
  const message = h("div", { class: "nnsight-message" });
  const body = h("div", {}, [heads, h("div", { class: "nnsight-scroll" }, matrix)]);
  root.append(
    h("div", { class: "nnsight-toolbar" }, [layerPicker, headInfo, dims, note, scalePicker]),
    message,
    body,
  );
  const tooltip = createTooltip(root);

  // The decoded traits; decoded again only when they change.
  let size = null; // { n, q, k } from `shape`, when it is valid and not empty
  let thumbs = null; // { data: Uint8Array, shape: [n, tq, tk] }, when valid
  let values = null; // Float32Array of q * k, when its length fits
  let problem = ""; // why neither can be drawn
  let valuesMax = 1; // the largest weight in `values` (1 when none is > 0)
  const isHead = new Map(); // head -> whether `values` are that head's
  let preview = null; // { head, data }: that head's thumbnail blown up to q x k
  let decodeStale = true;
  let thumbsStale = true;
  // What is drawn on the main canvas, and the cell under the pointer there.
  let shown = null; // { head, exact, data }
  let hover = null; // { row, col }
  let theme = null;

  const decode = () => {
    size = null;
    thumbs = null;
    values = null;
    problem = "";
    isHead.clear();
    preview = null;
    const shape = model.get("shape");
    if (!Array.isArray(shape) || shape.length !== 3 || product(shape) == null) {
      problem = `shape should be [heads, queries, keys], got ${JSON.stringify(shape)}`;
      return;
    }
    if (product(shape) === 0) {
      problem = "No attention pattern to show.";
      return;
    }
    const [n, q, k] = shape;
    size = { n, q, k };
    const t = decodeThumbnails(model.get("thumbnails"), model.get("thumb_shape"), shape);
    const v = decodeTensor(model.get("values"), [q, k], 2);
    thumbs = t.error ? null : t;
    values = v.error ? null : v.data;
    if (values) {
      const hi = extent(values)[1];
      valuesMax = hi > 0 ? hi : 1;
    } else if (!thumbs) {
      problem = `${v.error}; ${t.error}`;
    }
  };

  const currentHead = () => {
    const head = readInt(model, "head", 0);
    return size && head >= 0 && head < size.n ? head : 0;
  };
  /** Whether `values` hold `head`'s weights (without thumbnails to check against: yes). */
  const valuesAre = (head) => {
    if (!values) return false;
    if (!thumbs) return true;
    if (!isHead.has(head)) {
      isHead.set(head, matchesThumbnail(values, size.q, size.k, thumbs, head));
    }
    return isHead.get(head);
  };
  /** What the main canvas shows for the current head: its exact values or its thumbnail. */
  const source = () => {
    const head = currentHead();
    if (valuesAre(head)) return { head, exact: true, data: values };
    if (!thumbs) return null;
    if (preview?.head !== head) {
      preview = { head, data: expandThumbnail(thumbs, head, size.q, size.k) };
    }
    return { head, exact: false, data: preview.data };
  };
  const tokenLists = () => {
    const keyTokens = readList(model, "tokens").map(String);
    let queryTokens = readList(model, "query_tokens").map(String);
    if (!queryTokens.length && size && keyTokens.length === size.q) queryTokens = keyTokens;
    return { keyTokens, queryTokens };
  };
  const ramp = (hi) =>
    sequentialScale(0, hi, { background: theme.background, strong: theme.strong });

  const drawToolbar = () => {
    const layers = Math.max(1, readInt(model, "num_layers", 1));
    const layer = readInt(model, "layer", 0);
    layerPicker.hidden = layers <= 1;
    if (layerSelect.options.length !== layers) {
      layerSelect.replaceChildren(
        ...Array.from({ length: layers }, (_, i) => h("option", { value: String(i), text: i })),
      );
    }
    layerSelect.value = String(layer);
    headInfo.textContent = shown ? `head ${shown.head} of ${size.n}` : "";
    dims.textContent = shown ? `${size.q} queries × ${size.k} keys` : "";
    note.hidden = !shown || shown.exact;
    // The 0 – 1 scale needs exact weights; a thumbnail only knows its head's max.
    scalePicker.title = note.hidden ? "" : "the 8-bit preview is always scaled to the head's max";
  };

  const drawThumbs = () => {
    heads.replaceChildren();
    if (!size) return;
    const { n, q, k } = size;
    const display = thumbSize(q, k);
    const scale = ramp(255);
    for (let head = 0; head < n; head++) {
      const canvas = h("canvas", {
        class: "nnsight-head-thumb",
        role: "option",
        tabindex: "0",
        title: `head ${head}`,
        "aria-label": `head ${head}`,
        dataset: { head: String(head) },
        style: { width: `${display.width}px`, height: `${display.height}px` },
      });
      if (thumbs) {
        const [, tq, tk] = thumbs.shape;
        paint(canvas, rasterize(thumbs.data, head * tq * tk, tq, tk, tk, tq, scale), tk, tq);
      }
      heads.append(h("figure", { class: "nnsight-head" }, [canvas, `h${head}`]));
    }
  };

  const markHead = () => {
    const head = currentHead();
    for (const canvas of heads.querySelectorAll(".nnsight-head-thumb")) {
      const on = Number(canvas.dataset.head) === head;
      setClass(canvas.parentElement, "is-selected", on);
      canvas.setAttribute("aria-selected", String(on));
    }
  };

  const drawLabels = (cell) => {
    keys.replaceChildren();
    queries.replaceChildren();
    if (!shown || cell < LABEL_MIN_CELL) return;
    const { q, k } = size;
    const { keyTokens, queryTokens } = tokenLists();
    const label = (text, style, index) =>
      h("div", { class: "nnsight-label", title: text, style, dataset: { index } }, text);
    const px = `${cell}px`;
    for (let j = 0; j < k; j++) {
      keys.append(label(tokenLabel(keyTokens, j), { width: px, lineHeight: px }, j));
    }
    for (let i = 0; i < q; i++) {
      queries.append(label(tokenLabel(queryTokens, i), { height: px, lineHeight: px }, i));
    }
  };

  const drawMain = () => {
    if (!shown) return;
    const { q, k } = size;
    const cell = cellSize(Math.max(q, k), MAIN_PX, 1, 32);
    const width = axisPixels(k, cell);
    const height = axisPixels(q, cell);
    let scale = ramp(255); // a thumbnail: 255 is the head's max
    if (shown.exact) scale = scaleSelect.value === "max" ? ramp(valuesMax) : ramp(1);
    paint(main, rasterize(shown.data, 0, q, k, width, height, scale), width, height);
    overlay.width = width;
    overlay.height = height;
    drawLabels(width === k * cell && height === q * cell ? cell : 0);
    drawHover();
  };

  const drawHover = () => {
    const ctx = context2d(overlay);
    ctx?.clearRect(0, 0, overlay.width, overlay.height);
    for (const node of root.querySelectorAll(".nnsight-label.is-hover")) {
      node.classList.remove("is-hover");
    }
    if (!shown || !hover) return;
    const { q, k } = size;
    const cw = overlay.width / k;
    const ch = overlay.height / q;
    keys.children[hover.col]?.classList.add("is-hover");
    queries.children[hover.row]?.classList.add("is-hover");
    if (!ctx) return;
    ctx.fillStyle = cssColor(theme.foreground, 0.12);
    ctx.fillRect(0, hover.row * ch, overlay.width, ch);
    ctx.fillRect(hover.col * cw, 0, cw, overlay.height);
    ctx.strokeStyle = cssColor(theme.foreground, 0.9);
    ctx.lineWidth = 1;
    ctx.strokeRect(hover.col * cw + 0.5, hover.row * ch + 0.5, Math.max(1, cw - 1), ch - 1);
  };

  const draw = () => {
    theme = resolveTheme(root);
    if (decodeStale) decode();
    decodeStale = false;
    shown = size ? source() : null;
    message.hidden = Boolean(shown);
    message.textContent = shown ? "" : problem;
    body.hidden = !shown;
    hover = null;
    tooltip.hide();
    drawToolbar();
    if (thumbsStale) drawThumbs();
    thumbsStale = false;
    markHead();
    drawMain();
  };
  const schedule = batched(draw);
  const redecode = () => {
    decodeStale = true;
    schedule();
  };
  const redrawAll = () => {
    decodeStale = true;
    thumbsStale = true;
    schedule();
  };

  const onThumbActivate = (event) => {
    if (event.type === "keydown" && event.key !== "Enter" && event.key !== " ") return;
    const canvas = event.target.closest?.(".nnsight-head-thumb");
    if (!canvas) return;
    event.preventDefault();
    save(model, "head", Number(canvas.dataset.head));
  };
  const onLayer = () => save(model, "layer", Number(layerSelect.value));
  const onMove = (event) => {
    if (!shown) return;
    const { q, k } = size;
    const at = cellAt(event, main, q, k);
    if (!at) {
      onLeave();
      return;
    }
    if (!hover || hover.row !== at.row || hover.col !== at.col) {
      hover = at;
      drawHover();
    }
    const { keyTokens, queryTokens } = tokenLists();
    const cell = shown.data[at.row * k + at.col];
    let value = cell;
    if (!shown.exact) {
      const [, tq, tk] = thumbs.shape;
      value = previewValue(cell, blockSize(q, tq) > 1 || blockSize(k, tk) > 1);
    }
    tooltip.show(
      attentionTooltip(queryTokens, keyTokens, at.row, at.col, value),
      event.clientX,
      event.clientY,
    );
  };
  const onLeave = () => {
    hover = null;
    drawHover();
    tooltip.hide();
  };

  const offEvents = [
    listen(heads, "click", onThumbActivate),
    listen(heads, "keydown", onThumbActivate),
    listen(layerSelect, "change", onLayer),
    listen(scaleSelect, "change", schedule),
    listen(main, "mousemove", onMove),
    listen(main, "mouseleave", onLeave),
  ];
  const offValues = onChange(model, ["values"], redecode);
  const offThumbs = onChange(model, ["thumbnails", "thumb_shape", "shape"], redrawAll);
  const offView = onChange(
    model,
    ["head", "layer", "num_layers", "tokens", "query_tokens"],
    schedule,
  );
  const stopTheme = watchTheme(root, redrawAll);
  draw();

  return teardown(root, [
    schedule.cancel,
    stopAttach,
    offValues,
    offThumbs,
    offView,
    stopTheme,
    ...offEvents,
  ]);
}

export default { render };
