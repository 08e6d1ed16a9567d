/**
 * AttentionView: one layer's attention pattern [heads, q, k] as a grid of head
 * thumbnails and the selected head large, with token-to-token hover. Matrices
 * are drawn through ImageData (one pixel block per cell), so 500+ tokens stay
 * fast; token labels appear only when cells are big enough to read them.
 */
import { decodeTensor } from "./lib/buffers.js";
import { axisPixels, cellAt, cellSize, context2d, paint } from "./lib/canvas.js";
import { cssColor, extent, sequentialScale } from "./lib/colors.js";
import { h, setClass } from "./lib/dom.js";
import { batched, onChange, readInt, readList, save } from "./lib/model.js";
import { rasterize } from "./lib/raster.js";
import { resolveTheme, watchTheme } from "./lib/theme.js";
import { showWhitespace, tokenLabel } from "./lib/tokens.js";
import { createTooltip } from "./lib/tooltip.js";
import { mountRoot } from "./lib/widget.js";
import css from "./styles/attention_view.css?raw";

const THUMB_PX = 72;
const MAIN_PX = 560;
const LABEL_MIN_CELL = 12;

/** The tooltip line for query i, key j. */
export function attentionTooltip(queryTokens, keyTokens, i, j, value) {
  const q = showWhitespace(queryTokens[i] ?? String(i));
  const k = showWhitespace(keyTokens[j] ?? String(j));
  const v = Number.isFinite(value) ? value.toFixed(4) : String(value);
  return `query "${q}" (${i}) → key "${k}" (${j}): ${v}`;
}

/** Display size of a head thumbnail, keeping the q:k aspect (at least 8 px a side). */
function thumbSize(q, k) {
  const scale = THUMB_PX / Math.max(q, k, 1);
  return { width: Math.max(8, Math.round(k * scale)), height: Math.max(8, Math.round(q * scale)) };
}

function render({ model, el }) {
  const { root, stop: stopAttach } = mountRoot(el, "nnsight-attention-view", css, () =>
    redrawAll(),
  );
  const layerSelect = h("select", { class: "nnsight-layer-select", "aria-label": "layer" });
  const layerPicker = h("label", { class: "nnsight-layer-picker" }, ["layer ", layerSelect]);
  // View-only (not synced): long sequences spread attention thin, so the
  // default 0..1 ramp can look empty; "head max" stretches each head's ramp.
  const scaleSelect = h("select", { class: "nnsight-scale-select", "aria-label": "colour scale" }, [
    h("option", { value: "unit", text: "0 – 1" }),
    h("option", { value: "max", text: "head max" }),
  ]);
  const scalePicker = h("label", { class: "nnsight-scale-picker" }, ["colour ", scaleSelect]);
  const headInfo = h("span", { class: "nnsight-head-info" });
  const dims = h("span", { class: "nnsight-muted nnsight-dims" });
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
    h("div", { class: "nnsight-toolbar" }, [layerPicker, headInfo, dims, scalePicker]),
    message,
    body,
  );
  const tooltip = createTooltip(root);

  // What is drawn, so a head change does not redraw every thumbnail.
  let tensor = null; // { data, shape } of the current layer
  let theme = null;
  let unitScale = null;
  const headScales = new Map(); // head -> its "head max" scale, for the current data
  let thumbsStale = true;
  let hover = null; // { row, col } under the pointer on the main canvas

  const headCount = () => (tensor ? tensor.shape[0] : 0);
  const currentHead = () => {
    const head = readInt(model, "head", 0);
    return head >= 0 && head < headCount() ? head : 0;
  };
  const tokenLists = () => {
    const keyTokens = readList(model, "tokens").map(String);
    let queryTokens = readList(model, "query_tokens").map(String);
    if (!queryTokens.length && tensor && keyTokens.length === tensor.shape[1]) {
      queryTokens = keyTokens;
    }
    return { keyTokens, queryTokens };
  };

  /** The colour scale of `head`: 0..1, or 0..(the head's largest weight). */
  const scaleFor = (head) => {
    if (scaleSelect.value !== "max") return unitScale;
    if (!headScales.has(head)) {
      const [, q, k] = tensor.shape;
      const hi = extent(tensor.data, head * q * k, (head + 1) * q * k)[1];
      const ends = { background: theme.background, strong: theme.strong };
      headScales.set(head, sequentialScale(0, hi > 0 ? hi : 1, ends));
    }
    return headScales.get(head);
  };

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
    if (tensor) {
      const [n, q, k] = tensor.shape;
      headInfo.textContent = `head ${currentHead()} of ${n}`;
      dims.textContent = `${q} queries × ${k} keys`;
    } else {
      headInfo.textContent = "";
      dims.textContent = "";
    }
  };

  const drawThumbs = () => {
    heads.replaceChildren();
    if (!tensor) return;
    const [n, q, k] = tensor.shape;
    const size = thumbSize(q, k);
    const pw = Math.min(k, THUMB_PX);
    const ph = Math.min(q, THUMB_PX);
    for (let head = 0; head < n; head++) {
      const canvas = h("canvas", {
        class: "nnsight-head-thumb",
        role: "option",
        tabindex: "0",
        title: `head ${head}`,
        "aria-label": `head ${head}`,
        dataset: { head: String(head) },
        style: { width: `${size.width}px`, height: `${size.height}px` },
      });
      paint(canvas, rasterize(tensor.data, head * q * k, q, k, pw, ph, scaleFor(head)), pw, ph);
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
    if (!tensor || cell < LABEL_MIN_CELL) return;
    const [, q, k] = tensor.shape;
    const { keyTokens, queryTokens } = tokenLists();
    const label = (text, style, index) =>
      h("div", { class: "nnsight-label", title: text, style, dataset: { index } }, text);
    for (let j = 0; j < k; j++) {
      const px = `${cell}px`;
      keys.append(label(tokenLabel(keyTokens, j), { width: px, lineHeight: px }, j));
    }
    for (let i = 0; i < q; i++) {
      const px = `${cell}px`;
      queries.append(label(tokenLabel(queryTokens, i), { height: px, lineHeight: px }, i));
    }
  };

  const drawMain = () => {
    if (!tensor) return;
    const [, q, k] = tensor.shape;
    const cell = cellSize(Math.max(q, k), MAIN_PX, 1, 32);
    const width = axisPixels(k, cell);
    const height = axisPixels(q, cell);
    const head = currentHead();
    const pixels = rasterize(tensor.data, head * q * k, q, k, width, height, scaleFor(head));
    paint(main, pixels, width, height);
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
    if (!tensor || !hover) return;
    const [, q, k] = tensor.shape;
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
    unitScale = sequentialScale(0, 1, { background: theme.background, strong: theme.strong });
    headScales.clear();
    const decoded = decodeTensor(model.get("values"), model.get("shape"), 3);
    const empty = !decoded.error && decoded.data.length === 0;
    tensor = decoded.error || empty ? null : decoded;
    message.hidden = Boolean(tensor);
    message.textContent = decoded.error ?? (empty ? "No attention pattern to show." : "");
    body.hidden = !tensor;
    hover = null;
    tooltip.hide();
    drawToolbar();
    if (thumbsStale) drawThumbs();
    thumbsStale = false;
    markHead();
    drawMain();
  };
  const schedule = batched(draw);
  const redrawAll = () => {
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
    if (!tensor) return;
    const [, q, k] = tensor.shape;
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
    const value = tensor.data[currentHead() * q * k + at.row * k + at.col];
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

  heads.addEventListener("click", onThumbActivate);
  heads.addEventListener("keydown", onThumbActivate);
  layerSelect.addEventListener("change", onLayer);
  scaleSelect.addEventListener("change", redrawAll);
  main.addEventListener("mousemove", onMove);
  main.addEventListener("mouseleave", onLeave);
  const offData = onChange(model, ["values", "shape"], redrawAll);
  const offView = onChange(
    model,
    ["head", "layer", "num_layers", "tokens", "query_tokens"],
    schedule,
  );
  const stopTheme = watchTheme(root, redrawAll);
  draw();

  return () => {
    schedule.cancel();
    stopAttach();
    offData();
    offView();
    stopTheme();
    heads.removeEventListener("click", onThumbActivate);
    heads.removeEventListener("keydown", onThumbActivate);
    layerSelect.removeEventListener("change", onLayer);
    scaleSelect.removeEventListener("change", redrawAll);
    main.removeEventListener("mousemove", onMove);
    main.removeEventListener("mouseleave", onLeave);
    root.remove();
  };
}

export default { render };
