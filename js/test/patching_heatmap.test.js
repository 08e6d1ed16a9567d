import { afterEach, describe, expect, it, vi } from "vitest";
import widget, { cellText } from "../src/patching_heatmap.js";
import { click, dataView, fakeModel, flush, mount, mouse } from "./helpers.js";

afterEach(() => {
  document.body.replaceChildren();
});

// [C=2, L=3, P=4]; component 0 has +2 at (layer 0, pos 3) and -1 at (layer 2, pos 0)
function values() {
  const v = new Array(2 * 3 * 4).fill(0);
  v[0 * 12 + 0 * 4 + 3] = 2;
  v[0 * 12 + 2 * 4 + 0] = -1;
  v[1 * 12 + 1 * 4 + 1] = 5;
  return v;
}

function model(extra = {}) {
  return fakeModel({
    values: dataView(values()),
    shape: [2, 3, 4],
    tokens: ["The", " Eiff", "el", "\n"],
    layers: ["0", "1", "2"],
    components: ["resid", "mlp"],
    title: "Logit difference recovered",
    component: 0,
    selected: [],
    ...extra,
  });
}

function pixel(image, x, y) {
  const o = (y * image.width + x) * 4;
  return [...image.data.slice(o, o + 3)];
}

describe("PatchingHeatmap", () => {
  it("draws layers as rows (first on top) and positions as columns, red up, blue down", () => {
    const putImageData = vi.spyOn(CanvasRenderingContext2D.prototype, "putImageData");
    const { el } = mount(widget, model());
    expect(el.querySelector(".nnsight-patching-heatmap")).not.toBeNull();
    expect(el.querySelector(".nnsight-title").textContent).toBe("Logit difference recovered");
    const canvas = el.querySelector("canvas.nnsight-heatmap-canvas");
    expect(canvas.width).toBe(4 * 48);
    expect(canvas.height).toBe(3 * 28);
    const call = putImageData.mock.calls.find(([image]) => image.width === canvas.width);
    const image = call[0];
    const background = pixel(image, 10, 10); // layer 0, position 0: value 0
    const positive = pixel(image, 3 * 48 + 10, 10); // layer 0, position 3: +2 (the max)
    const negative = pixel(image, 10, 2 * 28 + 10); // layer 2, position 0: -1
    expect(background).toEqual([255, 255, 255]);
    expect(positive[0]).toBeGreaterThan(positive[2]);
    expect(negative[2]).toBeGreaterThan(negative[0]);
    // -1 is half the scale: paler than the full +2
    const dist = (c) => Math.hypot(255 - c[0], 255 - c[1], 255 - c[2]);
    expect(dist(negative)).toBeLessThan(dist(positive));
    putImageData.mockRestore();
  });

  it("labels the axes and shows a symmetric colour bar", () => {
    const { el } = mount(widget, model());
    const x = [...el.querySelectorAll(".nnsight-xlabels .nnsight-label")].map((n) => n.textContent);
    expect(x).toEqual(["The", "␣Eiff", "el", "↵"]);
    const y = [...el.querySelectorAll(".nnsight-ylabels .nnsight-label")].map((n) => n.textContent);
    expect(y).toEqual(["0", "1", "2"]);
    const ticks = [...el.querySelectorAll(".nnsight-tick")].map((n) => n.textContent);
    expect(ticks).toEqual(["-2", "0", "2"]);
    expect(el.querySelector(".nnsight-range").textContent).toBe("min -1 · max 2");
  });

  it("writes selected = [layer, position] on a cell click", () => {
    const m = model();
    const { el } = mount(widget, m);
    const canvas = el.querySelector(".nnsight-heatmap-canvas");
    click(canvas, { clientX: 2 * 48 + 5, clientY: 28 + 5 });
    expect(m.set).toHaveBeenCalledWith("selected", [1, 2]);
    expect(m.save_changes).toHaveBeenCalledTimes(1);
    expect(el.querySelector(".nnsight-status").textContent).toBe(
      'selected: layer 1, position 2 "el": 0',
    );
  });

  it("shows a hover tooltip with the token's whitespace visible", () => {
    const { el } = mount(widget, model({ layers: ["L0", "L1", "L2"] }));
    const canvas = el.querySelector(".nnsight-heatmap-canvas");
    mouse(canvas, "mousemove", 3 * 48 + 5, 5);
    const tip = el.querySelector(".nnsight-tooltip");
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toBe('layer L0, position 3 "↵": 2');
    expect(el.querySelector(".nnsight-xlabels .is-hover").textContent).toBe("↵");
    mouse(canvas, "mouseleave", 0, 0);
    expect(tip.hidden).toBe(true);
  });

  it("switches component from the picker and re-renders on kernel changes", async () => {
    const m = model();
    const { el } = mount(widget, m);
    const select = el.querySelector("select.nnsight-component-select");
    expect([...select.options].map((o) => o.textContent)).toEqual(["resid", "mlp"]);
    select.value = "1";
    select.dispatchEvent(new Event("change", { bubbles: true }));
    expect(m.set).toHaveBeenCalledWith("component", 1);
    await flush();
    expect(el.querySelector(".nnsight-range").textContent).toBe("min 0 · max 5");

    m.receive({ values: dataView([1, -3]), shape: [1, 1, 2], tokens: [], title: "" });
    await flush();
    expect(el.querySelector(".nnsight-component-picker").hidden).toBe(true);
    expect(el.querySelector(".nnsight-title").hidden).toBe(true);
    const x = [...el.querySelectorAll(".nnsight-xlabels .nnsight-label")].map((n) => n.textContent);
    expect(x).toEqual(["0", "1"]); // no tokens: positions by index
    expect(el.querySelector(".nnsight-range").textContent).toBe("min -3 · max 1");
  });

  it("rotates and thins out crowded labels, keeping the DOM bounded", () => {
    const P = 400;
    const L = 48;
    const tokens = Array.from({ length: P }, (_, i) => `tok${i}`);
    const m = fakeModel({
      values: dataView(new Array(L * P).fill(0.5)),
      shape: [1, L, P],
      tokens,
      layers: Array.from({ length: L }, (_, i) => String(i)),
      components: ["resid"],
      title: "",
      component: 0,
      selected: [],
    });
    const { el } = mount(widget, m);
    const labels = el.querySelectorAll(".nnsight-xlabels .nnsight-label");
    expect(labels.length).toBeLessThan(P);
    expect(labels.length).toBeGreaterThan(10);
    expect(labels[0].classList.contains("is-rotated")).toBe(true);
    expect(el.querySelectorAll("*").length).toBeLessThan(400);
  });

  it("shows the selection the kernel sets", () => {
    const m = model();
    const { el } = mount(widget, m);
    m.receive({ selected: [2, 0] });
    expect(el.querySelector(".nnsight-status").textContent).toBe(
      'selected: layer 2, position 0 "The": -1',
    );
  });

  it("redraws with the page's styles once a detached element is attached", async () => {
    const host = document.createElement("div");
    document.body.append(host);
    const shadow = host.attachShadow({ mode: "open" });
    const el = document.createElement("div"); // rendered before it is attached
    widget.render({ model: model(), el });
    const canvas = el.querySelector(".nnsight-heatmap-canvas");
    const spy = vi.spyOn(canvas.getContext("2d"), "putImageData");
    expect(shadow.querySelector("style")).toBeNull();
    shadow.append(el);
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    expect(spy).toHaveBeenCalled();
    expect(shadow.querySelectorAll("style[data-nnsight-style]")).toHaveLength(2);
  });

  it("cleans up its listeners", () => {
    const m = model();
    const { cleanup } = mount(widget, m);
    cleanup();
    expect(m.listenerCount()).toBe(0);
  });
});

describe("cellText", () => {
  it("reads like the contract", () => {
    expect(cellText(["a"], [" x"], 0, 0, 0.5)).toBe('layer a, position 0 "␣x": 0.5');
    expect(cellText([], [], 4, 7, -0.25)).toBe("layer 4, position 7: -0.25");
  });
});
