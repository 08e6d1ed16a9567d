/**
 * ModuleTree: the model's modules as a foldable, searchable tree. Clicking a
 * module selects its access path (trait `selected`) and copies it; `stats`
 * adds shapes, moments and a histogram sparkline to the modules that have them.
 */
import { selectAndCopy } from "./lib/clipboard.js";
import { h, listen } from "./lib/dom.js";
import { formatShape, formatValue, humanCount } from "./lib/format.js";
import { batched, onChange, read, save } from "./lib/model.js";
import { sparkline } from "./lib/sparkline.js";
import { filterTree } from "./lib/tree.js";
import { reveal, treeRows } from "./lib/tree_rows.js";
import { mountRoot, teardown } from "./lib/widget.js";
import css from "./styles/module_tree.css?raw";

const INDENT_PX = 14;

function statsView(stats) {
  const parts = [];
  if (Array.isArray(stats.shape)) {
    parts.push(h("span", { class: "nnsight-shape", text: formatShape(stats.shape) }));
  }
  const moments = [];
  if (stats.mean != null) moments.push(`μ ${formatValue(stats.mean, 3)}`);
  if (stats.std != null) moments.push(`σ ${formatValue(stats.std, 3)}`);
  if (stats.min != null && stats.max != null) {
    moments.push(`[${formatValue(stats.min, 3)}, ${formatValue(stats.max, 3)}]`);
  }
  if (moments.length) parts.push(h("span", { class: "nnsight-moments", text: moments.join(" ") }));
  const range = Array.isArray(stats.hist_range)
    ? `histogram over [${stats.hist_range.map((v) => formatValue(v)).join(", ")}]`
    : "histogram";
  if (Array.isArray(stats.hist) && stats.hist.length) {
    parts.push(sparkline(stats.hist, { title: range }));
  }
  const title = [
    formatShape(stats.shape),
    stats.dtype,
    stats.device,
    stats.mean != null ? `mean ${formatValue(stats.mean, 6)}` : null,
    stats.std != null ? `std ${formatValue(stats.std, 6)}` : null,
    stats.min != null ? `min ${formatValue(stats.min, 6)}` : null,
    stats.max != null ? `max ${formatValue(stats.max, 6)}` : null,
  ]
    .filter(Boolean)
    .join("  ");
  return h("span", { class: "nnsight-stats", title }, spaced(parts));
}

/** Children separated by spaces, so the row's text reads naturally ("attn GPT2Attention"). */
function spaced(nodes) {
  const out = [];
  for (const node of nodes) {
    if (out.length) out.push(" ");
    out.push(node);
  }
  return out;
}

function toggleButton(row, index) {
  return h("button", {
    class: "nnsight-toggle",
    type: "button",
    "aria-expanded": String(row.open),
    "aria-label": row.open ? "collapse" : "expand",
    dataset: { index: String(index), action: "toggle" },
    text: row.open ? "▾" : "▸",
  });
}

function nodeRow(row, index, stats, selected) {
  const { node } = row;
  const parts = [
    h("button", {
      class: "nnsight-node-label",
      type: "button",
      title: `${node.path}: click to select and copy`,
      dataset: { index: String(index), action: "select" },
      text: node.name ?? node.path,
    }),
    h("span", { class: "nnsight-cls", text: node.cls ?? "" }),
  ];
  const s = stats?.[node.path];
  if (s && typeof s === "object") parts.push(statsView(s));
  if (node.params != null) {
    parts.push(h("span", { class: "nnsight-params", text: humanCount(node.params) }));
  }
  const classes = ["nnsight-row", "nnsight-node"];
  if (row.match) classes.push("is-match");
  if (node.path === selected) classes.push("is-selected");
  return h(
    "div",
    {
      class: classes.join(" "),
      role: "treeitem",
      "aria-level": String(row.depth + 1),
      "aria-expanded": row.hasChildren ? String(row.open) : null,
      "aria-selected": String(node.path === selected),
      dataset: { path: node.path, depth: String(row.depth) },
      style: { paddingLeft: `${row.depth * INDENT_PX}px` },
    },
    [
      row.hasChildren ? toggleButton(row, index) : h("span", { class: "nnsight-toggle-spacer" }),
      ...spaced(parts),
    ],
  );
}

function groupRow(row, index) {
  const { group } = row;
  const count = group.members.length;
  const hidden = row.shown.length < count ? ` (${row.shown.length} shown)` : "";
  return h(
    "div",
    {
      class: "nnsight-row nnsight-group",
      role: "treeitem",
      "aria-level": String(row.depth + 1),
      "aria-expanded": String(row.open),
      dataset: { group: group.key, label: group.label, depth: String(row.depth) },
      style: { paddingLeft: `${row.depth * INDENT_PX}px` },
    },
    [
      toggleButton(row, index),
      ...spaced([
        h("button", {
          class: "nnsight-group-label",
          type: "button",
          dataset: { index: String(index), action: "toggle" },
          text: group.label,
        }),
        h("span", { class: "nnsight-cls", text: `${group.cls} ×${count}${hidden}` }),
        h("span", { class: "nnsight-params", text: humanCount(group.params) }),
      ]),
    ],
  );
}

function render({ model, el }) {
  const { root, stop: stopAttach } = mountRoot(el, "nnsight-module-tree", css);
  const search = h("input", {
    class: "nnsight-tree-search",
    type: "search",
    placeholder: "Filter by path or class…",
    "aria-label": "filter modules by path or class",
    spellcheck: "false",
    autocomplete: "off",
  });
  const summary = h("span", { class: "nnsight-muted nnsight-summary" });
  const list = h("div", { class: "nnsight-tree", role: "tree" });
  const status = h("div", { class: "nnsight-status", "aria-live": "polite" });
  root.append(h("div", { class: "nnsight-toolbar" }, [search, summary]), list, status);

  // Fold state the person chose: one map for browsing, one for the current search.
  const browseToggles = new Map();
  let searchToggles = new Map();
  let query = String(read(model, "query", ""));
  let rows = [];
  let note = "";
  let memo = new WeakMap();
  search.value = query;

  const draw = () => {
    const tree = model.get("tree");
    const selected = String(read(model, "selected", ""));
    list.replaceChildren();
    if (!tree || typeof tree !== "object" || tree.path == null) {
      rows = [];
      list.append(h("div", { class: "nnsight-message", text: "No module tree to show." }));
      summary.textContent = "";
    } else {
      const filter = filterTree(tree, query);
      rows = treeRows(tree, { expanded: filter ? searchToggles : browseToggles, filter, memo });
      const stats = read(model, "stats", {});
      list.append(
        ...rows.map((row, i) =>
          row.kind === "node" ? nodeRow(row, i, stats, selected) : groupRow(row, i),
        ),
      );
      if (filter && filter.matches.size === 0) {
        list.append(h("div", { class: "nnsight-message", text: `No module matches “${query}”.` }));
      }
      summary.textContent = filter ? `${filter.matches.size} matching` : "";
    }
    status.textContent = selected ? `selected: ${selected}${note}` : "Click a module to select it.";
  };
  const schedule = batched(draw);

  const onClick = (event) => {
    const button = event.target.closest?.("[data-action]");
    if (!button || !list.contains(button)) return;
    const row = rows[Number(button.dataset.index)];
    if (!row) return;
    if (button.dataset.action === "toggle") {
      const key = row.kind === "group" ? row.group.key : row.node.path;
      const toggles = filterTree(model.get("tree"), query) ? searchToggles : browseToggles;
      toggles.set(key, !row.open);
      draw();
    } else if (button.dataset.action === "select") {
      const path = row.node.path;
      note = "";
      selectAndCopy(model, path, () => {
        note = " (copied)";
        draw();
      });
      draw();
    }
  };

  const onInput = () => {
    if (search.value === query) return;
    query = search.value;
    searchToggles = new Map();
    save(model, "query", query);
    draw();
  };

  const offQuery = onChange(model, ["query"], () => {
    const value = String(read(model, "query", ""));
    if (value === query) return;
    query = value;
    search.value = value;
    searchToggles = new Map();
    schedule();
  });
  const offSelected = onChange(model, ["selected"], () => {
    const selected = String(read(model, "selected", ""));
    const tree = model.get("tree");
    if (selected && tree) reveal(tree, selected, browseToggles, memo);
    note = "";
    schedule();
  });
  const offData = onChange(model, ["tree", "stats"], () => {
    memo = new WeakMap();
    schedule();
  });

  const offClick = listen(list, "click", onClick);
  const offInput = listen(search, "input", onInput);
  const initial = String(read(model, "selected", ""));
  if (initial && model.get("tree")) reveal(model.get("tree"), initial, browseToggles, memo);
  draw();

  return teardown(root, [
    schedule.cancel,
    stopAttach,
    offQuery,
    offSelected,
    offData,
    offClick,
    offInput,
  ]);
}

export default { render };
