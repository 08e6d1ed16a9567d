import { afterEach, describe, expect, it, vi } from "vitest";
import widget from "../src/module_tree.js";
import { click, fakeModel, flush, GPT2_FIRST_ROWS, gpt2Tree, mount } from "./helpers.js";

const rowPaths = (el) => [...el.querySelectorAll(".nnsight-node")].map((r) => r.dataset.path);
const row = (el, path) => el.querySelector(`.nnsight-node[data-path="${path}"]`);
const label = (el, path) => row(el, path).querySelector(".nnsight-node-label");

afterEach(() => {
  document.body.replaceChildren();
  vi.unstubAllGlobals();
});

describe("ModuleTree", () => {
  it("renders the tree with humanised parameter counts and a folded block group", () => {
    const model = fakeModel({ tree: gpt2Tree(), stats: {}, selected: "", query: "" });
    const { el } = mount(widget, model);
    const root = el.querySelector(".nnsight-module-tree");
    expect(root).not.toBeNull();
    expect(rowPaths(el)).toEqual(GPT2_FIRST_ROWS);
    expect(row(el, "llm").textContent).toContain("GPT2LMHeadModel");
    expect(row(el, "llm").querySelector(".nnsight-params").textContent).toBe("124.4M");

    // open h: one group row for the twelve blocks
    click(row(el, "llm.transformer.h").querySelector(".nnsight-toggle"));
    const groups = el.querySelectorAll(".nnsight-group");
    expect(groups).toHaveLength(1);
    expect(groups[0].textContent).toContain("h.0-11");
    expect(groups[0].textContent).toContain("GPT2Block ×12");
    expect(groups[0].querySelector(".nnsight-params").textContent).toBe("85.1M");
    expect(row(el, "llm.transformer.h[0]")).toBeNull();

    // open the group: its members appear, still folded
    click(groups[0].querySelector(".nnsight-toggle"));
    expect(rowPaths(el).filter((p) => /h\[\d+\]$/.test(p))).toHaveLength(12);
    expect(row(el, "llm.transformer.h[0].attn")).toBeNull();
    click(row(el, "llm.transformer.h[0]").querySelector(".nnsight-toggle"));
    expect(row(el, "llm.transformer.h[0].attn")).not.toBeNull();

    // and fold it again
    click(el.querySelector(".nnsight-group .nnsight-toggle"));
    expect(row(el, "llm.transformer.h[0]")).toBeNull();
  });

  it("selects and copies a node's path on click, and marks it", async () => {
    const writeText = vi.fn(() => Promise.resolve());
    vi.stubGlobal("navigator", { clipboard: { writeText } });
    const model = fakeModel({ tree: gpt2Tree(), stats: {}, selected: "", query: "" });
    const { el } = mount(widget, model);
    click(label(el, "llm.transformer.wte"));
    expect(model.set).toHaveBeenCalledWith("selected", "llm.transformer.wte");
    expect(model.save_changes).toHaveBeenCalled();
    expect(writeText).toHaveBeenCalledWith("llm.transformer.wte");
    expect(row(el, "llm.transformer.wte").classList.contains("is-selected")).toBe(true);
    expect(el.querySelectorAll(".is-selected")).toHaveLength(1);
    await flush();
    expect(el.querySelector(".nnsight-status").textContent).toContain("(copied)");
  });

  it("still selects when the clipboard is unavailable or refuses", async () => {
    vi.stubGlobal("navigator", {
      clipboard: { writeText: () => Promise.reject(new Error("denied")) },
    });
    const model = fakeModel({ tree: gpt2Tree(), selected: "" });
    const { el } = mount(widget, model);
    click(label(el, "llm.lm_head"));
    await flush();
    expect(model.data.selected).toBe("llm.lm_head");
    expect(el.querySelector(".nnsight-status").textContent).not.toContain("copied");
  });

  it("filters by the search box and writes the query back", () => {
    const model = fakeModel({ tree: gpt2Tree(), stats: {}, selected: "", query: "" });
    const { el } = mount(widget, model);
    const input = el.querySelector("input.nnsight-tree-search");
    input.value = "h[2].mlp.c_fc";
    input.dispatchEvent(new Event("input", { bubbles: true }));
    expect(model.set).toHaveBeenCalledWith("query", "h[2].mlp.c_fc");
    expect(model.save_changes).toHaveBeenCalled();
    expect(rowPaths(el)).toEqual([
      "llm",
      "llm.transformer",
      "llm.transformer.h",
      "llm.transformer.h[2]",
      "llm.transformer.h[2].mlp",
      "llm.transformer.h[2].mlp.c_fc",
    ]);
    expect(row(el, "llm.transformer.h[2].mlp.c_fc").classList.contains("is-match")).toBe(true);

    input.value = "";
    input.dispatchEvent(new Event("input", { bubbles: true }));
    expect(rowPaths(el)).toContain("llm.lm_head");
    expect(rowPaths(el)).not.toContain("llm.transformer.h[2]");
  });

  it("follows query, tree, stats and selected changes from the kernel", async () => {
    const model = fakeModel({ tree: gpt2Tree(2), stats: {}, selected: "", query: "" });
    const { el } = mount(widget, model);

    model.receive({ query: "GPT2MLP" });
    await flush();
    expect(el.querySelector("input").value).toBe("GPT2MLP");
    expect(rowPaths(el)).toContain("llm.transformer.h[1].mlp");
    expect(rowPaths(el)).not.toContain("llm.lm_head");

    model.receive({ query: "" });
    model.receive({
      stats: {
        "llm.lm_head": {
          shape: [1, 10, 50257],
          dtype: "float32",
          device: "cpu",
          mean: 0.5,
          std: 2,
          min: -7,
          max: 9,
          hist: [0, 1, 5, 9, 3, 0],
          hist_range: [-7, 9],
        },
      },
    });
    await flush();
    const stats = row(el, "llm.lm_head").querySelector(".nnsight-stats");
    expect(stats.textContent).toContain("[1, 10, 50257]");
    expect(stats.textContent).toContain("μ 0.5");
    expect(stats.querySelector("svg.nnsight-sparkline path").getAttribute("d")).not.toBe("");

    model.receive({ selected: "llm.transformer.h[1].attn.c_proj" });
    await flush();
    const selected = row(el, "llm.transformer.h[1].attn.c_proj");
    expect(selected).not.toBeNull();
    expect(selected.classList.contains("is-selected")).toBe(true);

    model.receive({ tree: { ...gpt2Tree(1), cls: "Renamed" } });
    await flush();
    expect(row(el, "llm").textContent).toContain("Renamed");
  });

  it("removes its listeners and DOM on cleanup", () => {
    const model = fakeModel({ tree: gpt2Tree(1) });
    const { el, cleanup } = mount(widget, model);
    expect(model.listenerCount()).toBeGreaterThan(0);
    cleanup();
    expect(model.listenerCount()).toBe(0);
    expect(el.querySelector(".nnsight-module-tree")).toBeNull();
  });

  it("says so when there is no tree", () => {
    const { el } = mount(widget, fakeModel({ tree: {} }));
    expect(el.querySelector(".nnsight-message").textContent).toMatch(/No module tree/);
  });
});
