import { afterEach, describe, expect, it, vi } from "vitest";
import widget from "../src/source_view.js";
import { click, fakeModel, flush, mount } from "./helpers.js";

const LINES = [
  { number: "*", text: "@torch.no_grad()", ops: [] },
  { number: "0", text: "def forward(self, x):", ops: [] },
  { number: "1", text: "    query = self.c_attn(x)", ops: ["self_c_attn_0"] },
  { number: "2", text: "    q, k, v = query.split(768, dim=2)", ops: ["split_0", "getitem_0"] },
  { number: "3", text: "    return <b>q</b>", ops: [] },
];

afterEach(() => {
  document.body.replaceChildren();
  vi.unstubAllGlobals();
});

describe("SourceView", () => {
  const model = () =>
    fakeModel({ module_path: "llm.transformer.h[0].attn", lines: LINES, selected: "" });

  it("lists every line with its number, indentation and op chips", () => {
    const { el } = mount(widget, model());
    expect(el.querySelector(".nnsight-source-view")).not.toBeNull();
    const rows = el.querySelectorAll(".nnsight-source-line");
    expect(rows).toHaveLength(5);
    expect(rows[0].querySelector(".nnsight-lineno").textContent).toBe("*");
    expect(rows[2].querySelector(".nnsight-code").textContent).toBe("    query = self.c_attn(x)");
    // markup in source stays text
    expect(rows[4].querySelector(".nnsight-code").textContent).toBe("    return <b>q</b>");
    expect(rows[4].querySelector("b")).toBeNull();
    const chips = [...rows[3].querySelectorAll(".nnsight-op")].map((c) => c.dataset.op);
    expect(chips).toEqual(["split_0", "getitem_0"]);
    expect(el.querySelectorAll(".nnsight-op")).toHaveLength(3);
    expect(el.querySelector(".nnsight-module-path").textContent).toBe(
      "llm.transformer.h[0].attn.source",
    );
  });

  it("selects and copies the operation's output path on a chip click", async () => {
    const writeText = vi.fn(() => Promise.resolve());
    vi.stubGlobal("navigator", { clipboard: { writeText } });
    const m = model();
    const { el } = mount(widget, m);
    click(el.querySelector('.nnsight-op[data-op="getitem_0"]'));
    const path = "llm.transformer.h[0].attn.source.getitem_0.output";
    expect(m.set).toHaveBeenCalledWith("selected", path);
    expect(m.save_changes).toHaveBeenCalledTimes(1);
    expect(writeText).toHaveBeenCalledWith(path);
    const chip = el.querySelector('.nnsight-op[data-op="getitem_0"]');
    expect(chip.classList.contains("is-selected")).toBe(true);
    expect(el.querySelectorAll(".nnsight-op.is-selected")).toHaveLength(1);
    await flush();
    expect(el.querySelector(".nnsight-status").textContent).toBe(`selected: ${path} (copied)`);
  });

  it("re-renders when the kernel changes lines, module_path or selected", async () => {
    const m = model();
    const { el } = mount(widget, m);
    m.receive({
      module_path: "llm.transformer.h[5].mlp",
      lines: [{ number: "0", text: "def forward(self, h):", ops: ["self_c_fc_0"] }],
    });
    await flush();
    expect(el.querySelectorAll(".nnsight-source-line")).toHaveLength(1);
    m.receive({ selected: "llm.transformer.h[5].mlp.source.self_c_fc_0.output" });
    await flush();
    expect(el.querySelector(".nnsight-op").classList.contains("is-selected")).toBe(true);
    m.receive({ lines: [] });
    await flush();
    expect(el.querySelector(".nnsight-message").textContent).toMatch(/No source/);
  });

  it("cleans up its listeners", () => {
    const m = model();
    const { cleanup } = mount(widget, m);
    cleanup();
    expect(m.listenerCount()).toBe(0);
  });
});
