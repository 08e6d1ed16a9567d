/**
 * PatchingHeatmap: activation-patching results [components, layers, positions]
 * as a heatmap of one component (layers as rows, first at the top; positions as
 * columns), on a diverging scale centred at 0. Clicking a cell writes
 * `selected = [layer, position]`.
 */
import { decodeTensor } from "./lib/buffers.js";
import { axisPixels, cellAt, cellSize, context2d, paint } from "./lib/canvas.js";
import { cssColor, divergingScale, extent, maxAbs } from "./lib/colors.js";
import { h, listen } from "./lib/dom.js";
import { formatValue } from "./lib/format.js";
import { batched, onChange, read, readInt, readList, save } from "./lib/model.js";
import { rasterize } from "./lib/raster.js";
import { resolveTheme, watchTheme } from "./lib/theme.js";
import { showWhitespace, truncate } from "./lib/tokens.js";
import { createTooltip } from "./lib/tooltip.js";
import { mountRoot, teardown } from "./lib/widget.js";
import css from "./styles/patching_heatmap.css?raw";

const WIDTH_PX = 720;
const HEIGHT_PX = 420;
const ROTATE_BELOW = 40; // column width (px) under which x labels turn vertical
const LINE_PX = 13; // room one label line needs across its axis
const BAR_PX = 200;
const CHAR_PX = 7;

/** The tooltip / status text of a cell. */
export function cellText(layers, tokens, layer, position, value) {
  const name = layers[layer] ?? String(layer);
  const token = position < tokens.length ? ` "${showWhitespace(tokens[position])}"` : "";
  return `layer ${name}, position ${position}${token}: ${formatValue(value)}`;
}

/** Every `step`-th index of `count` so labels `size` px apart never overlap. */
function labelStep(size) {
  return Math.max(1, Math.ceil(LINE_PX / Math.max(size, 1e-9)));
}

function render({ model, el }) {
  const { root, stop: stopAttach } = mountRoot(el, "nnsight-patching-heatmap", css, () =>
    schedule(),
  );
  const title = h("div", { class: "nnsight-title" });
  const componentSelect = h("select", {
    class: "nnsight-component-select",
    "aria-label": "component",
  });
  const componentPicker = h("label", { class: "nnsight-component-picker" }, [
    "component ",
    componentSelect,
  ]);
  const canvas = h("canvas", { class: "nnsight-heatmap-canvas", "aria-label": "heatmap" });
  const overlay = h("canvas", { class: "nnsight-overlay", "aria-hidden": "true" });
  const ylabels = h("div", { class: "nnsight-ylabels" });
  const xlabels = h("div", { class: "nnsight-xlabels" });
  const plot = h("div", { class: "nnsight-plot" }, [
    ylabels,
    h("div", { class: "nnsight-stack" }, [canvas, overlay]),
    xlabels,
  ]);
  const bar = h("canvas", { class: "nnsight-colorbar", "aria-hidden": "true" });
  const ticks = h("div", { class: "nnsight-ticks" });
  const range = h("span", { class: "nnsight-muted nnsight-range" });
  const legend = h("div", { class: "nnsight-legend" }, [
    h("div", { class: "nnsight-colorbar-wrap" }, [bar, ticks]),
    range,
  ]);
  const message = h("div", { class: "nnsight-message" });
  const status = h("div", { class: "nnsight-status", "aria-live": "polite" });
  const body = h("div", {}, [
    h("div", { class: "nnsight-axis-title", text: "rows: layers · columns: positions" }),
    h("div", { class: "nnsight-scroll" }, plot),
    legend,
    status,
  ]);
  root.append(h("div", { class: "nnsight-toolbar" }, [title, componentPicker]), message, body);
  const tooltip = createTooltip(root);

  let tensor = null; // { data, shape: [C, L, P] }
  let theme = null;
  let hover = null; // { row: layer, col: position }

  const component = () => {
    const c = readInt(model, "component", 0);
    return tensor && c >= 0 && c < tensor.shape[0] ? c : 0;
  };
  const selection = () => {
    const s = read(model, "selected", []);
    return Array.isArray(s) && s.length === 2 ? { row: Number(s[0]), col: Number(s[1]) } : null;
  };
  const valueAt = (layer, position) => {
    const [, L, P] = tensor.shape;
    return tensor.data[component() * L * P + layer * P + position];
  };
  const names = () => ({
    layers: readList(model, "layers").map(String),
    tokens: readList(model, "tokens").map(String),
  });

  const drawToolbar = () => {
    const text = String(read(model, "title", ""));
    title.textContent = text;
    title.hidden = !text;
    const count = tensor ? tensor.shape[0] : 0;
    const labels = readList(model, "components").map(String);
    componentPicker.hidden = count <= 1;
    componentSelect.replaceChildren(
      ...Array.from({ length: count }, (_, c) =>
        h("option", { value: String(c), text: labels[c] ?? `component ${c}` }),
      ),
    );
    componentSelect.value = String(component());
  };

  const drawYLabels = (L, height) => {
    const { layers } = names();
    const size = height / L;
    const step = labelStep(size);
    let longest = 1;
    const nodes = [];
    for (let l = 0; l < L; l += step) {
      const text = truncate(layers[l] ?? String(l), 24);
      longest = Math.max(longest, text.length);
      const style = { top: `${l * size}px`, height: `${size}px`, lineHeight: `${size}px` };
      nodes.push(
        h("div", { class: "nnsight-label", title: text, style, dataset: { index: l } }, text),
      );
    }
    ylabels.replaceChildren(...nodes);
    ylabels.style.width = `${Math.min(160, longest * CHAR_PX + 6)}px`;
    ylabels.style.height = `${height}px`;
  };

  const drawXLabels = (P, width) => {
    const { tokens } = names();
    const size = width / P;
    const rotated = size < ROTATE_BELOW;
    const step = rotated ? labelStep(size) : 1;
    let longest = 1;
    const nodes = [];
    for (let p = 0; p < P; p += step) {
      const full = p < tokens.length ? showWhitespace(tokens[p]) : String(p);
      const text = truncate(full, rotated ? 14 : Math.max(1, Math.floor(size / CHAR_PX)));
      longest = Math.max(longest, text.length);
      const style = rotated
        ? { left: `${p * size}px`, width: `${Math.max(size, LINE_PX)}px`, lineHeight: `${size}px` }
        : { left: `${p * size}px`, width: `${size}px` };
      nodes.push(
        h(
          "div",
          {
            class: rotated ? "nnsight-label is-rotated" : "nnsight-label",
            title: `${p}: ${full}`,
            style,
            dataset: { index: p },
          },
          text,
        ),
      );
    }
    xlabels.replaceChildren(...nodes);
    xlabels.style.width = `${width}px`;
    xlabels.style.height = rotated ? `${Math.min(96, longest * CHAR_PX + 6)}px` : "18px";
  };

  const drawLegend = (scale, lo, hi) => {
    const width = BAR_PX;
    const ramp = new Float32Array(width);
    for (let x = 0; x < width; x++)
      ramp[x] = scale.lo + ((x + 0.5) / width) * (scale.hi - scale.lo);
    paint(bar, rasterize(ramp, 0, 1, width, width, 1, scale), width, 1);
    ticks.replaceChildren(
      h("span", { class: "nnsight-tick", text: formatValue(scale.lo, 3) }),
      h("span", { class: "nnsight-tick", text: "0" }),
      h("span", { class: "nnsight-tick", text: formatValue(scale.hi, 3) }),
    );
    range.textContent = Number.isNaN(lo)
      ? "no finite values"
      : `min ${formatValue(lo)} · max ${formatValue(hi)}`;
  };

  const drawOverlay = () => {
    const ctx = context2d(overlay);
    ctx?.clearRect(0, 0, overlay.width, overlay.height);
    for (const node of root.querySelectorAll(".nnsight-label.is-hover")) {
      node.classList.remove("is-hover");
    }
    if (!tensor) return;
    const [, L, P] = tensor.shape;
    const cw = overlay.width / P;
    const ch = overlay.height / L;
    if (hover) {
      for (const node of ylabels.children) {
        if (Number(node.dataset.index) === hover.row) node.classList.add("is-hover");
      }
      for (const node of xlabels.children) {
        if (Number(node.dataset.index) === hover.col) node.classList.add("is-hover");
      }
    }
    if (!ctx) return;
    const outline = (cell, color, width) => {
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      const inset = width / 2;
      ctx.strokeRect(
        cell.col * cw + inset,
        cell.row * ch + inset,
        Math.max(1, cw - width),
        Math.max(1, ch - width),
      );
    };
    const selected = selection();
    if (selected && selected.row < L && selected.col < P) {
      outline(selected, cssColor(theme.foreground), 2);
    }
    if (hover) outline(hover, cssColor(theme.foreground, 0.6), 1);
  };

  const drawStatus = () => {
    const selected = selection();
    if (
      !tensor ||
      !selected ||
      selected.row >= tensor.shape[1] ||
      selected.col >= tensor.shape[2]
    ) {
      status.textContent = "Click a cell to select it.";
      return;
    }
    const { layers, tokens } = names();
    const value = valueAt(selected.row, selected.col);
    status.textContent = `selected: ${cellText(layers, tokens, selected.row, selected.col, value)}`;
  };

  const draw = () => {
    theme = resolveTheme(root);
    const decoded = decodeTensor(model.get("values"), model.get("shape"), 3);
    const empty = !decoded.error && decoded.data.length === 0;
    tensor = decoded.error || empty ? null : decoded;
    message.hidden = Boolean(tensor);
    message.textContent = decoded.error ?? (empty ? "No patching results to show." : "");
    body.hidden = !tensor;
    hover = null;
    tooltip.hide();
    drawToolbar();
    if (!tensor) return;
    const [, L, P] = tensor.shape;
    const start = component() * L * P;
    const [lo, hi] = extent(tensor.data, start, start + L * P);
    const scale = divergingScale(maxAbs(tensor.data, start, start + L * P), theme);
    const width = axisPixels(P, cellSize(P, WIDTH_PX, 2, 48));
    const height = axisPixels(L, cellSize(L, HEIGHT_PX, 6, 28));
    paint(canvas, rasterize(tensor.data, start, L, P, width, height, scale), width, height);
    overlay.width = width;
    overlay.height = height;
    drawYLabels(L, height);
    drawXLabels(P, width);
    drawLegend(scale, lo, hi);
    drawOverlay();
    drawStatus();
  };
  const schedule = batched(draw);

  const onMove = (event) => {
    if (!tensor) return;
    const at = cellAt(event, canvas, tensor.shape[1], tensor.shape[2]);
    if (!at) {
      onLeave();
      return;
    }
    if (!hover || hover.row !== at.row || hover.col !== at.col) {
      hover = at;
      drawOverlay();
    }
    const { layers, tokens } = names();
    const text = cellText(layers, tokens, at.row, at.col, valueAt(at.row, at.col));
    tooltip.show(text, event.clientX, event.clientY);
  };
  const onLeave = () => {
    hover = null;
    drawOverlay();
    tooltip.hide();
  };
  const onClick = (event) => {
    if (!tensor) return;
    const at = cellAt(event, canvas, tensor.shape[1], tensor.shape[2]);
    if (!at) return;
    save(model, "selected", [at.row, at.col]);
    drawOverlay();
    drawStatus();
  };
  const onComponent = () => save(model, "component", Number(componentSelect.value));

  const offEvents = [
    listen(canvas, "mousemove", onMove),
    listen(canvas, "mouseleave", onLeave),
    listen(canvas, "click", onClick),
    listen(componentSelect, "change", onComponent),
  ];
  const offData = onChange(
    model,
    ["values", "shape", "tokens", "layers", "components", "title", "component"],
    schedule,
  );
  const offSelected = onChange(model, ["selected"], () => {
    drawOverlay();
    drawStatus();
  });
  const stopTheme = watchTheme(root, schedule);
  draw();

  return teardown(root, [
    schedule.cancel,
    stopAttach,
    offData,
    offSelected,
    stopTheme,
    ...offEvents,
  ]);
}

export default { render };
