import { afterEach, describe, expect, it, vi } from "vitest";
import widget, { attentionTooltip } from "../src/attention_view.js";
import { click, dataView, fakeModel, flush, mount, mouse } from "./helpers.js";

afterEach(() => {
  document.body.replaceChildren();
});

/** Two heads over 3 tokens: head 0 attends to itself, head 1 to the first token. */
function twoHeads() {
  const values = [];
  for (let head = 0; head < 2; head++) {
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) values.push(head === 0 ? Number(i === j) : Number(j === 0));
    }
  }
  return values;
}

function model(extra = {}) {
  return fakeModel({
    values: dataView(twoHeads()),
    shape: [2, 3, 3],
    num_layers: 4,
    layer: 0,
    head: 0,
    tokens: ["The", " cat", "\n"],
    query_tokens: ["The", " cat", "\n"],
    ...extra,
  });
}

/** The RGB of canvas pixel (x, y) in the last putImageData on `ctx`. */
function pixel(spy, x, y) {
  const image = spy.mock.calls.at(-1)[0];
  const o = (y * image.width + x) * 4;
  return [...image.data.slice(o, o + 3)];
}

describe("AttentionView", () => {
  it("draws a thumbnail per head and the selected head large", () => {
    const { el } = mount(widget, model());
    expect(el.querySelector(".nnsight-attention-view")).not.toBeNull();
    const thumbs = el.querySelectorAll("canvas.nnsight-head-thumb");
    expect([...thumbs].map((t) => t.dataset.head)).toEqual(["0", "1"]);
    const main = el.querySelector("canvas.nnsight-attention-main");
    expect(main.width).toBe(96); // 3 cells of 32 px
    expect(main.height).toBe(96);
    expect(el.querySelector(".nnsight-head.is-selected canvas").dataset.head).toBe("0");
    // cells are 32 px: labels along both axes, whitespace visible
    const keys = [...el.querySelectorAll(".nnsight-keys .nnsight-label")].map((n) => n.textContent);
    expect(keys).toEqual(["The", "␣cat", "↵"]);
    expect(el.querySelectorAll(".nnsight-queries .nnsight-label")).toHaveLength(3);
  });

  it("sets head on a thumbnail click and redraws the large canvas", async () => {
    const m = model();
    const { el } = mount(widget, m);
    const main = el.querySelector(".nnsight-attention-main");
    const spy = vi.spyOn(main.getContext("2d"), "putImageData");
    click(el.querySelector('.nnsight-head-thumb[data-head="1"]'));
    expect(m.set).toHaveBeenCalledWith("head", 1);
    expect(m.save_changes).toHaveBeenCalled();
    await flush();
    expect(spy).toHaveBeenCalled();
    // head 1: query 1 attends to key 0 (strong), not to itself (background)
    const strong = pixel(spy, 5, 40);
    const background = pixel(spy, 40, 40);
    expect(background).toEqual([255, 255, 255]);
    expect(strong).not.toEqual(background);
    expect(strong[2]).toBeGreaterThan(strong[0]);
    expect(el.querySelector(".nnsight-head.is-selected canvas").dataset.head).toBe("1");
    expect(el.querySelector(".nnsight-head-info").textContent).toBe("head 1 of 2");
  });

  it("re-renders when the kernel swaps in another layer's values", async () => {
    const m = model();
    const { el } = mount(widget, m);
    const select = el.querySelector("select.nnsight-layer-select");
    expect(select.options).toHaveLength(4);
    select.value = "2";
    select.dispatchEvent(new Event("change", { bubbles: true }));
    expect(m.set).toHaveBeenCalledWith("layer", 2);
    expect(m.save_changes).toHaveBeenCalled();

    // the kernel answers with a 4-head layer over 2 tokens
    m.receive({
      values: dataView(new Array(16).fill(0.25)),
      shape: [4, 2, 2],
      tokens: ["a", "b"],
      query_tokens: ["a", "b"],
    });
    await flush();
    expect(el.querySelectorAll(".nnsight-head-thumb")).toHaveLength(4);
    expect(el.querySelector(".nnsight-attention-main").width).toBe(64);
    expect(el.querySelector(".nnsight-dims").textContent).toBe("2 queries × 2 keys");
  });

  it("shows the token pair and value on hover and highlights the labels", () => {
    const m = model({ head: 1 });
    const { el } = mount(widget, m);
    const main = el.querySelector(".nnsight-attention-main");
    mouse(main, "mousemove", 10, 80); // col 0, row 2
    const tip = el.querySelector(".nnsight-tooltip");
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toBe('query "↵" (2) → key "The" (0): 1.0000');
    expect(el.querySelector(".nnsight-keys .is-hover").textContent).toBe("The");
    expect(el.querySelector(".nnsight-queries .is-hover").textContent).toBe("↵");
    mouse(main, "mouseleave", 0, 0);
    expect(tip.hidden).toBe(true);
    expect(el.querySelectorAll(".is-hover")).toHaveLength(0);
  });

  it("stretches the colour ramp to the head's max when asked (view only)", async () => {
    // one head, weights spread thin: 0.05 everywhere, 0.1 on the diagonal
    const values = [];
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) values.push(i === j ? 0.1 : 0.05);
    const m = model({ values: dataView(values), shape: [1, 3, 3] });
    const { el } = mount(widget, m);
    const main = el.querySelector(".nnsight-attention-main");
    const spy = vi.spyOn(main.getContext("2d"), "putImageData");
    const select = el.querySelector("select.nnsight-scale-select");
    expect(select.value).toBe("unit");
    select.value = "max";
    select.dispatchEvent(new Event("change", { bubbles: true }));
    await flush();
    const stretched = pixel(spy, 5, 5); // the diagonal: the head's max, drawn full strength
    select.value = "unit";
    select.dispatchEvent(new Event("change", { bubbles: true }));
    await flush();
    const unit = pixel(spy, 5, 5); // 0.1 of the 0..1 ramp: barely tinted
    const dist = (c) => Math.hypot(255 - c[0], 255 - c[1], 255 - c[2]);
    expect(dist(stretched)).toBeGreaterThan(5 * dist(unit));
    expect(m.set).not.toHaveBeenCalled(); // a view setting, not a trait
  });

  it("hides the layer picker for a single layer and explains bad data", async () => {
    const m = model({ num_layers: 1 });
    const { el } = mount(widget, m);
    expect(el.querySelector(".nnsight-layer-picker").hidden).toBe(true);
    m.receive({ shape: [2, 3, 4] });
    await flush();
    expect(el.querySelector(".nnsight-message").hidden).toBe(false);
    expect(el.querySelector(".nnsight-message").textContent).toMatch(/needs 24/);
  });

  it("stays fast and DOM-light for 600 tokens", () => {
    const heads = 4;
    const n = 600;
    const values = new Float32Array(heads * n * n);
    for (let i = 0; i < values.length; i += 7) values[i] = 0.5;
    const tokens = Array.from({ length: n }, (_, i) => `t${i}`);
    const m = fakeModel({
      values: dataView(values),
      shape: [heads, n, n],
      num_layers: 1,
      layer: 0,
      head: 0,
      tokens,
      query_tokens: tokens,
    });
    const start = performance.now();
    const { el } = mount(widget, m);
    expect(performance.now() - start).toBeLessThan(3000);
    const main = el.querySelector(".nnsight-attention-main");
    expect(main.width).toBe(600); // one pixel per cell
    expect(el.querySelectorAll(".nnsight-label")).toHaveLength(0); // cells too small to label
    expect(el.querySelectorAll("*").length).toBeLessThan(60);
    mouse(main, "mousemove", 599, 10);
    expect(el.querySelector(".nnsight-tooltip").textContent).toMatch(/\(10\) → key "t599" \(599\)/);
  });

  it("cleans up its listeners", () => {
    const m = model();
    const { cleanup, el } = mount(widget, m);
    cleanup();
    expect(m.listenerCount()).toBe(0);
    expect(el.children).toHaveLength(0);
  });
});

describe("attentionTooltip", () => {
  it("names both tokens with whitespace visible and four decimals", () => {
    expect(attentionTooltip([" a"], ["\tb", "c"], 0, 1, 0.123456)).toBe(
      'query "␣a" (0) → key "c" (1): 0.1235',
    );
    expect(attentionTooltip([], [], 3, 4, 0.5)).toBe('query "3" (3) → key "4" (4): 0.5000');
  });
});
