import { describe, expect, it } from "vitest";
import { ancestry, classSignature, filterTree, groupChildren } from "../src/lib/tree.js";
import { reveal, treeRows } from "../src/lib/tree_rows.js";
import { GPT2_FIRST_ROWS, gpt2Tree } from "./helpers.js";

const node = (name, cls, children = []) => ({ name, path: `p.${name}`, cls, params: 10, children });

describe("classSignature", () => {
  it("compares class names recursively", () => {
    const a = node("0", "Block", [node("x", "Linear")]);
    const b = node("1", "Block", [node("y", "Linear")]);
    const c = node("2", "Block", [node("x", "Conv")]);
    expect(classSignature(a)).toBe(classSignature(b));
    expect(classSignature(a)).not.toBe(classSignature(c));
  });
});

describe("groupChildren", () => {
  it("folds the twelve GPT-2 blocks into one group", () => {
    const h = gpt2Tree().children[0].children[2];
    const items = groupChildren(h);
    expect(items).toHaveLength(1);
    const [group] = items;
    expect(group.type).toBe("group");
    expect(group.label).toBe("h.0-11");
    expect(group.cls).toBe("GPT2Block");
    expect(group.members).toHaveLength(12);
    expect(group.params).toBe(12 * 7087872);
  });

  it("splits runs where the class or the structure changes", () => {
    const parent = {
      name: "layers",
      path: "m.layers",
      cls: "ModuleList",
      children: [
        node("0", "Dense", [node("a", "Linear")]),
        node("1", "Dense", [node("a", "Linear")]),
        node("2", "Dense", [node("a", "Linear"), node("b", "Linear")]),
        node("3", "Sparse"),
        node("4", "Sparse"),
        node("5", "Sparse"),
        node("norm", "LayerNorm"),
      ],
    };
    const items = groupChildren(parent);
    expect(items.map((i) => (i.type === "group" ? i.label : i.node.name))).toEqual([
      "layers.0-1",
      "2",
      "layers.3-5",
      "norm",
    ]);
  });

  it("never groups named (non-integer) siblings or a single block", () => {
    const parent = { name: "m", path: "m", cls: "M", children: [node("q", "L"), node("k", "L")] };
    expect(groupChildren(parent).every((i) => i.type === "node")).toBe(true);
    const one = { name: "h", path: "h", cls: "L", children: [node("0", "Block")] };
    expect(groupChildren(one)[0].type).toBe("node");
  });
});

describe("filterTree", () => {
  const tree = gpt2Tree(3);

  it("is null for an empty query", () => {
    expect(filterTree(tree, "")).toBeNull();
    expect(filterTree(tree, "   ")).toBeNull();
  });

  it("keeps matches by path or class, case-insensitively, and their ancestors", () => {
    const f = filterTree(tree, "C_ATTN");
    expect([...f.matches].sort()).toEqual([
      "llm.transformer.h[0].attn.c_attn",
      "llm.transformer.h[1].attn.c_attn",
      "llm.transformer.h[2].attn.c_attn",
    ]);
    expect(f.visible.has("llm.transformer.h[1].attn")).toBe(true);
    expect(f.visible.has("llm")).toBe(true);
    expect(f.visible.has("llm.transformer.h[1].mlp")).toBe(false);
    expect(f.visible.has("llm.lm_head")).toBe(false);
    expect(f.open.has("llm.transformer.h[1].attn")).toBe(true);
    expect(f.open.has("llm.transformer.h[1].attn.c_attn")).toBe(false);

    const byClass = filterTree(tree, "layernorm");
    expect(byClass.matches.has("llm.transformer.ln_f")).toBe(true);
    expect(byClass.matches.has("llm.transformer.h[2].ln_2")).toBe(true);
  });

  it("finds nothing for a query nothing contains", () => {
    const f = filterTree(tree, "zzz");
    expect(f.matches.size).toBe(0);
    expect(f.visible.size).toBe(0);
  });
});

describe("treeRows", () => {
  const tree = gpt2Tree();
  const labels = (rows) =>
    rows.map((r) => (r.kind === "group" ? `#${r.group.label}` : r.node.path));

  it("opens the root and its first level and folds the blocks by default", () => {
    expect(labels(treeRows(tree))).toEqual(GPT2_FIRST_ROWS);
    const expanded = new Map([["llm.transformer.h", true]]);
    const rows = treeRows(tree, { expanded });
    expect(labels(rows)).toContain("#h.0-11");
    expect(labels(rows)).not.toContain("llm.transformer.h[0]");
    expect(labels(rows).at(-2)).toBe("llm.transformer.ln_f");
  });

  it("shows the members of an opened group", () => {
    const expanded = new Map([
      ["llm.transformer.h", true],
      ["llm.transformer.h[0-11]", true],
    ]);
    const rows = treeRows(tree, { expanded });
    const members = rows.filter((r) => r.kind === "node" && /h\[\d+\]$/.test(r.node.path));
    expect(members).toHaveLength(12);
    expect(members.every((r) => r.open === false)).toBe(true);
  });

  it("expands down to the matches of a search", () => {
    const rows = treeRows(tree, { filter: filterTree(tree, "h[3].attn.c_proj") });
    expect(labels(rows)).toEqual([
      "llm",
      "llm.transformer",
      "llm.transformer.h",
      "#h.0-11",
      "llm.transformer.h[3]",
      "llm.transformer.h[3].attn",
      "llm.transformer.h[3].attn.c_proj",
    ]);
    expect(rows.at(-1).match).toBe(true);
    expect(rows[0].match).toBe(false);
  });

  it("reveal opens the way to a node inside a folded group", () => {
    const expanded = new Map();
    expect(reveal(tree, "llm.transformer.h[7].mlp.c_fc", expanded)).toBe(true);
    const paths = labels(treeRows(tree, { expanded }));
    expect(paths).toContain("llm.transformer.h[7].mlp.c_fc");
    expect(paths).not.toContain("llm.transformer.h[6].mlp");
    expect(reveal(tree, "nope", new Map())).toBe(false);
    expect(ancestry(tree, "llm.lm_head").map((n) => n.name)).toEqual(["llm", "lm_head"]);
  });
});
