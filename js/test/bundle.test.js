// The committed bundles are what notebooks load: check they import, render,
// and are self-contained and small (freshness: bundle_fresh.test.js).
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { OUT_DIR, WIDGETS } from "../widgets.mjs";
import { dataView, fakeModel, gpt2Tree, mount } from "./helpers.js";

const MODELS = {
  module_tree: () => fakeModel({ tree: gpt2Tree(2), stats: {}, selected: "", query: "" }),
  source_view: () =>
    fakeModel({
      module_path: "llm.transformer.h[0].attn",
      lines: [{ number: "1", text: "    x = self.c_attn(x)", ops: ["self_c_attn_0"] }],
      selected: "",
    }),
  attention_view: () =>
    fakeModel({
      values: dataView([1, 0, 0.5, 0.5]),
      shape: [1, 2, 2],
      thumbnails: new DataView(Uint8Array.from([255, 0, 128, 128]).buffer),
      thumb_shape: [1, 2, 2],
      num_layers: 2,
      layer: 0,
      head: 0,
      tokens: ["a", "b"],
      query_tokens: ["a", "b"],
    }),
  patching_heatmap: () =>
    fakeModel({
      values: dataView([0.5, -0.5]),
      shape: [1, 1, 2],
      tokens: ["a", "b"],
      layers: ["0"],
      components: ["resid"],
      title: "t",
      component: 0,
      selected: [],
    }),
};

const ROOT_CLASS = {
  module_tree: "nnsight-module-tree",
  source_view: "nnsight-source-view",
  attention_view: "nnsight-attention-view",
  patching_heatmap: "nnsight-patching-heatmap",
};

afterEach(() => {
  document.body.replaceChildren();
});

describe("built bundles", () => {
  for (const name of WIDGETS) {
    it(`${name}.js is small, self-contained and renders`, async () => {
      const file = resolve(OUT_DIR, `${name}.js`);
      const text = readFileSync(file, "utf8");
      expect(Buffer.byteLength(text)).toBeLessThan(60 * 1024);
      // nothing fetched at display time: no imports, no URLs but the SVG namespace
      expect(text).not.toMatch(/\bimport\s*[{("'*]|\bimport\(|\bfetch\(/);
      const urls = text.match(/https?:\/\/[^\s"'`)]+/g) ?? [];
      expect(urls.filter((u) => u !== "http://www.w3.org/2000/svg")).toEqual([]);
      const { default: widget } = await import(/* @vite-ignore */ pathToFileURL(file).href);
      expect(typeof widget.render).toBe("function");
      const model = MODELS[name]();
      const { el, cleanup } = mount(widget, model);
      expect(el.querySelector(`.${ROOT_CLASS[name]}`)).not.toBeNull();
      expect(el.querySelector(".nnsight-message:not([hidden])")).toBeNull();
      if (name === "attention_view") {
        // the exact values of the shown head, not its 8-bit preview
        expect(el.querySelector(".nnsight-preview-note").hidden).toBe(true);
      }
      cleanup();
      expect(model.listenerCount()).toBe(0);
    });
  }
});
