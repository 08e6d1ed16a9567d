import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import widget, { attentionTooltip, previewValue } from "../src/attention_view.js";
import { thumbnailOf } from "../src/lib/thumbnails.js";
import { click, dataView, fakeModel, flush, mount, mouse } from "./helpers.js";

const WHITE = [255, 255, 255];
const STRONG = [8, 64, 150]; // the light theme's strong end: a head's max on "head max"

let putImageData;
beforeEach(() => {
  putImageData = vi.spyOn(CanvasRenderingContext2D.prototype, "putImageData");
});
afterEach(() => {
  putImageData.mockRestore();
  document.body.replaceChildren();
});

/** The RGB of pixel (x, y) in the last image put on `canvas`. */
function pixel(canvas, x, y) {
  const calls = putImageData.mock.calls.filter((_, i) => {
    return putImageData.mock.contexts[i].canvas === canvas;
  });
  expect(calls.length).toBeGreaterThan(0);
  const image = calls.at(-1)[0];
  expect([image.width, image.height]).toEqual([canvas.width, canvas.height]);
  const o = (y * image.width + x) * 4;
  return [...image.data.slice(o, o + 3)];
}

/** A q x k head from f(i, j), row-major. */
function head(q, k, f) {
  const out = [];
  for (let i = 0; i < q; i++) for (let j = 0; j < k; j++) out.push(f(i, j));
  return out;
}

/** The uint8 thumbnails the kernel sends for `heads` ([q * k] each): { bytes, shape }. */
function thumbnails(heads, q, k, cells = 64) {
  const [tq, tk] = [q, k].map((n) => Math.ceil(n / Math.ceil(n / cells)));
  const bytes = new Uint8Array(heads.length * tq * tk);
  heads.forEach((values, i) => {
    bytes.set(thumbnailOf(Float32Array.from(values), q, k, tq, tk).bytes, i * tq * tk);
  });
  return { bytes, shape: [heads.length, tq, tk] };
}

/** `bytes` as anywidget hands them over: a DataView. */
const bytesView = (bytes) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

// Two heads over 3 tokens: head 0 attends to itself, head 1 to the first token.
const DIAGONAL = head(3, 3, (i, j) => (i === j ? 0.7 : 0.15));
const FIRST = head(3, 3, (_, j) => (j === 0 ? 0.9 : 0.05));
const THUMBS = thumbnails([DIAGONAL, FIRST], 3, 3);

function model(extra = {}) {
  return fakeModel({
    values: dataView(DIAGONAL),
    shape: [2, 3, 3],
    thumbnails: bytesView(THUMBS.bytes),
    thumb_shape: THUMBS.shape,
    num_layers: 4,
    layer: 0,
    head: 0,
    tokens: ["The", " cat", "\n"],
    query_tokens: ["The", " cat", "\n"],
    ...extra,
  });
}

const query = (el, selector) => el.querySelector(selector);
const mainOf = (el) => query(el, "canvas.nnsight-attention-main");
const thumbOf = (el, h) => query(el, `canvas.nnsight-head-thumb[data-head="${h}"]`);
const tooltipAt = (el, x, y) => {
  mouse(mainOf(el), "mousemove", x, y);
  return query(el, ".nnsight-tooltip").textContent;
};
const isPreview = (el) => !query(el, ".nnsight-preview-note").hidden;

describe("AttentionView", () => {
  const buffers = {
    DataView: bytesView,
    ArrayBuffer: (bytes) => bytes.slice().buffer,
    Uint8Array: (bytes) => bytes,
  };
  for (const [kind, wrap] of Object.entries(buffers)) {
    it(`draws each head's thumbnail from its bytes (${kind})`, () => {
      const { el } = mount(widget, model({ thumbnails: wrap(THUMBS.bytes) }));
      expect(query(el, ".nnsight-attention-view")).not.toBeNull();
      const thumbs = el.querySelectorAll("canvas.nnsight-head-thumb");
      expect([...thumbs].map((t) => t.dataset.head)).toEqual(["0", "1"]);
      // one pixel per thumbnail cell, stretched by CSS to the thumbnail size
      expect([thumbs[1].width, thumbs[1].height]).toEqual([3, 3]);
      expect(thumbs[1].style.width).toBe("72px");
      // 255 (the head's max) is the strong end, 0 the background
      expect(pixel(thumbs[0], 1, 1)).toEqual(STRONG);
      expect(pixel(thumbs[1], 0, 2)).toEqual(STRONG);
      const off = [pixel(thumbs[0], 2, 0), pixel(thumbs[1], 2, 2)]; // 55 and 14 of 255
      const dist = (c) => Math.hypot(255 - c[0], 255 - c[1], 255 - c[2]);
      expect(dist(off[0])).toBeGreaterThan(2 * dist(off[1]));
      expect(dist(off[1])).toBeGreaterThan(0);
      expect(query(el, ".nnsight-message").hidden).toBe(true);
    });
  }

  it("draws the selected head's [q, k] values large, labelled, on the head's max by default", () => {
    const { el } = mount(widget, model());
    const main = mainOf(el);
    expect([main.width, main.height]).toEqual([96, 96]); // 3 cells of 32 px
    expect(query(el, ".nnsight-head.is-selected canvas").dataset.head).toBe("0");
    expect(query(el, ".nnsight-head-info").textContent).toBe("head 0 of 2");
    expect(isPreview(el)).toBe(false);
    const select = query(el, "select.nnsight-scale-select");
    expect(select.value).toBe("max");
    expect(pixel(main, 40, 40)).toEqual(STRONG); // 0.7 is this head's max: full strength
    const off = pixel(main, 40, 5); // 0.15: about a fifth of the way
    expect(off).not.toEqual(WHITE);
    expect(off[0]).toBeGreaterThan(190);
    const keys = [...el.querySelectorAll(".nnsight-keys .nnsight-label")].map((n) => n.textContent);
    expect(keys).toEqual(["The", "␣cat", "↵"]);
    expect(el.querySelectorAll(".nnsight-queries .nnsight-label")).toHaveLength(3);
  });

  it("shows the token pair and the exact float32 weight on hover", () => {
    const values = head(3, 3, (i, j) => (i === 2 && j === 0 ? 0.123456 : 0.5));
    const t = thumbnails([values, FIRST], 3, 3);
    const { el } = mount(widget, model({ values: dataView(values), thumbnails: t.bytes }));
    expect(tooltipAt(el, 10, 80)).toBe('query "↵" (2) → key "The" (0): 0.1235');
    expect(query(el, ".nnsight-tooltip").hidden).toBe(false);
    expect(query(el, ".nnsight-keys .is-hover").textContent).toBe("The");
    expect(query(el, ".nnsight-queries .is-hover").textContent).toBe("↵");
    expect(tooltipAt(el, 80, 40)).toMatch(/\(1\) → key "↵" \(2\): 0\.5000$/);
    mouse(mainOf(el), "mouseleave", 0, 0);
    expect(query(el, ".nnsight-tooltip").hidden).toBe(true);
    expect(el.querySelectorAll(".is-hover")).toHaveLength(0);
  });

  it("sets head on a thumbnail click and previews it until its values arrive", async () => {
    const m = model();
    const { el } = mount(widget, m);
    click(thumbOf(el, 1));
    expect(m.set).toHaveBeenCalledWith("head", 1);
    expect(m.save_changes).toHaveBeenCalled();
    await flush();
    expect(query(el, ".nnsight-head.is-selected canvas").dataset.head).toBe("1");
    expect(query(el, ".nnsight-head-info").textContent).toBe("head 1 of 2");
    // head 0's values are still there but are not drawn as head 1: its thumbnail is
    const main = mainOf(el);
    expect(query(el, ".nnsight-message").hidden).toBe(true);
    expect(isPreview(el)).toBe(true);
    expect(pixel(main, 5, 40)).toEqual(STRONG); // query 1 -> key 0
    expect(pixel(main, 40, 40)).toEqual(pixel(main, 80, 80)); // no diagonal
    expect(pixel(main, 40, 40)).not.toEqual(STRONG);
    expect(tooltipAt(el, 5, 40)).toBe('query "␣cat" (1) → key "The" (0): ≈ 100% of head max');

    m.receive({ values: dataView(FIRST) }); // the kernel answers
    await flush();
    expect(isPreview(el)).toBe(false);
    expect(pixel(main, 5, 40)).toEqual(STRONG);
    expect(tooltipAt(el, 5, 40)).toMatch(/: 0\.9000$/);
    expect(tooltipAt(el, 40, 40)).toMatch(/: 0\.0500$/);
  });

  it("does not show a late answer for another head as the current one", async () => {
    const m = model();
    const { el } = mount(widget, m);
    click(thumbOf(el, 1));
    click(thumbOf(el, 0));
    m.receive({ values: dataView(FIRST) }); // the answer to the first click
    await flush();
    expect(query(el, ".nnsight-head-info").textContent).toBe("head 0 of 2");
    expect(isPreview(el)).toBe(true);
    expect(pixel(mainOf(el), 40, 40)).toEqual(STRONG); // head 0's diagonal, from its thumbnail
    expect(tooltipAt(el, 5, 40)).not.toMatch(/0\.9000/);
    m.receive({ values: dataView(DIAGONAL) });
    await flush();
    expect(isPreview(el)).toBe(false);
    expect(tooltipAt(el, 40, 40)).toMatch(/: 0\.7000$/);
  });

  it("sets head from the keyboard and follows a head set by the kernel", async () => {
    const m = model();
    const { el } = mount(widget, m);
    thumbOf(el, 1).dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(m.set).toHaveBeenCalledWith("head", 1);
    m.receive({ head: 0 });
    await flush();
    expect(query(el, ".nnsight-head.is-selected canvas").dataset.head).toBe("0");
    m.receive({ head: 1 });
    await flush();
    expect(thumbOf(el, 1).getAttribute("aria-selected")).toBe("true");
    expect(thumbOf(el, 0).getAttribute("aria-selected")).toBe("false");
  });

  it("sets layer from the picker and redraws from the kernel's values and thumbnails", async () => {
    const m = model();
    const { el } = mount(widget, m);
    const select = query(el, "select.nnsight-layer-select");
    expect(select.options).toHaveLength(4);
    select.value = "2";
    select.dispatchEvent(new Event("change", { bubbles: true }));
    expect(m.set).toHaveBeenCalledWith("layer", 2);
    expect(m.save_changes).toHaveBeenCalled();

    // layer 2: head 0 attends to the last token, head 1 uniformly
    const last = head(3, 3, (_, j) => (j === 2 ? 0.8 : 0.1));
    const uniform = head(3, 3, () => 1 / 3);
    const next = thumbnails([last, uniform], 3, 3);
    m.receive({ values: dataView(last), thumbnails: bytesView(next.bytes) });
    await flush();
    expect(select.value).toBe("2");
    expect(isPreview(el)).toBe(false);
    expect(pixel(thumbOf(el, 0), 2, 0)).toEqual(STRONG);
    expect(pixel(thumbOf(el, 0), 1, 1)).not.toEqual(STRONG);
    expect(pixel(thumbOf(el, 1), 1, 1)).toEqual(STRONG);
    expect(pixel(mainOf(el), 80, 5)).toEqual(STRONG);
    expect(tooltipAt(el, 80, 5)).toMatch(/: 0\.8000$/);
  });

  it("follows a new shape: 4 heads over 2 tokens", async () => {
    const m = model();
    const { el } = mount(widget, m);
    const heads = [0, 1, 2, 3].map((h) => head(2, 2, (_, j) => (j === h % 2 ? 0.75 : 0.25)));
    const next = thumbnails(heads, 2, 2);
    m.receive({
      values: dataView(heads[0]),
      shape: [4, 2, 2],
      thumbnails: bytesView(next.bytes),
      thumb_shape: next.shape,
      tokens: ["a", "b"],
      query_tokens: ["a", "b"],
    });
    await flush();
    expect(el.querySelectorAll(".nnsight-head-thumb")).toHaveLength(4);
    expect(mainOf(el).width).toBe(64);
    expect(query(el, ".nnsight-dims").textContent).toBe("2 queries × 2 keys");
    expect(isPreview(el)).toBe(false);
  });

  it("offers 0 – 1 as a view-only alternative to the head's max", async () => {
    // weights spread thin: 0.05 everywhere, 0.1 on the diagonal
    const thin = head(3, 3, (i, j) => (i === j ? 0.1 : 0.05));
    const t = thumbnails([thin, FIRST], 3, 3);
    const m = model({ values: dataView(thin), thumbnails: bytesView(t.bytes) });
    const { el } = mount(widget, m);
    const main = mainOf(el);
    const stretched = pixel(main, 5, 5); // the head's max: full strength by default
    expect(stretched).toEqual(STRONG);
    const select = query(el, "select.nnsight-scale-select");
    select.value = "unit";
    select.dispatchEvent(new Event("change", { bubbles: true }));
    await flush();
    const unit = pixel(main, 5, 5); // 0.1 of the 0..1 ramp: barely tinted
    const dist = (c) => Math.hypot(255 - c[0], 255 - c[1], 255 - c[2]);
    expect(dist(stretched)).toBeGreaterThan(5 * dist(unit));
    expect(dist(unit)).toBeGreaterThan(0);
    expect(m.set).not.toHaveBeenCalled(); // a view setting, not a trait
  });

  it("draws from the thumbnail, without an error, when values do not fit [q, k]", () => {
    // a saved notebook without a kernel may hold stale or no values
    for (const values of [dataView([1, 2]), undefined]) {
      const { el } = mount(widget, model({ values, head: 1 }));
      expect(query(el, ".nnsight-message").hidden).toBe(true);
      expect(isPreview(el)).toBe(true);
      expect(pixel(mainOf(el), 5, 80)).toEqual(STRONG);
      expect(tooltipAt(el, 80, 5)).toMatch(/: ≈ 5% of head max$/); // 14 of 255 (0.05 / 0.9)
      document.body.replaceChildren();
    }
  });

  it("draws the values without thumbnails, and explains what it cannot draw", async () => {
    const m = model({ num_layers: 1, thumbnails: undefined });
    const { el } = mount(widget, m);
    expect(query(el, ".nnsight-layer-picker").hidden).toBe(true);
    expect(query(el, ".nnsight-message").hidden).toBe(true);
    expect(isPreview(el)).toBe(false);
    expect(pixel(mainOf(el), 40, 40)).toEqual(STRONG);
    m.receive({ values: dataView([1, 2, 3]) });
    await flush();
    const message = query(el, ".nnsight-message");
    expect(message.hidden).toBe(false);
    expect(message.textContent).toMatch(/values hold 3 floats but shape \[3,3\] needs 9/);
    expect(message.textContent).toMatch(/thumbnails hold 0 bytes/);
    m.receive({ shape: [2, 3] });
    await flush();
    expect(message.textContent).toMatch(/shape should be \[heads, queries, keys\]/);
  });

  it("rejects thumbnails whose shape does not fit the attention's", () => {
    const { el } = mount(widget, model({ values: undefined, thumb_shape: [3, 3, 2] }));
    expect(query(el, ".nnsight-message").textContent).toMatch(
      /thumb_shape \[3,3,2\] does not fit shape \[2,3,3\]/,
    );
  });

  it("stays fast and DOM-light for 600 tokens, with 60 x 60 pooled thumbnails", async () => {
    const n = 600;
    const heads = [0, 1, 2, 3].map(() => new Float32Array(n * n));
    for (let i = 0; i < n * n; i += 7) heads[0][i] = 0.5;
    heads.forEach((values, h) => {
      if (h > 0) for (let i = 0; i < n; i++) values[i * n + ((i + 100 * h) % n)] = 0.5;
      values[10 * n + 599] = 0.75;
    });
    const t = thumbnails(heads, n, n);
    expect(t.shape).toEqual([4, 60, 60]);
    const tokens = Array.from({ length: n }, (_, i) => `t${i}`);
    const m = fakeModel({
      values: dataView(heads[0]),
      shape: [4, n, n],
      thumbnails: bytesView(t.bytes),
      thumb_shape: t.shape,
      num_layers: 1,
      layer: 0,
      head: 0,
      tokens,
      query_tokens: tokens,
    });
    const start = performance.now();
    const { el } = mount(widget, m);
    expect(performance.now() - start).toBeLessThan(3000);
    const main = mainOf(el);
    expect(main.width).toBe(600); // one pixel per cell
    expect(isPreview(el)).toBe(false);
    expect(el.querySelectorAll(".nnsight-label")).toHaveLength(0); // cells too small to label
    expect(el.querySelectorAll("*").length).toBeLessThan(60);
    expect(tooltipAt(el, 599, 10)).toBe('query "t10" (10) → key "t599" (599): 0.7500');
    expect(thumbOf(el, 3).width).toBe(60);
    click(thumbOf(el, 2));
    await flush();
    expect(isPreview(el)).toBe(true); // pooled: each cell covers 10 x 10 weights
    expect(tooltipAt(el, 599, 10)).toMatch(/: block max ≈ 100% of head max$/);
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
    expect(attentionTooltip([], [], 0, 0, "≈ 50% of head max")).toMatch(/\): ≈ 50% of head max$/);
  });

  it("reads a thumbnail byte as a share of the head's max", () => {
    expect(previewValue(255, false)).toBe("≈ 100% of head max");
    expect(previewValue(64, true)).toBe("block max ≈ 25% of head max");
  });
});
