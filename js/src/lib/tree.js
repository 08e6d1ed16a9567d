/**
 * Pure helpers on the module tree ({ name, path, cls, params, children }):
 * grouping repeated blocks (h.0 .. h.11 of one class and structure), search
 * filtering, and finding a node's ancestors.
 */

const INTEGER = /^\d+$/;

export function childrenOf(node) {
  return Array.isArray(node?.children) ? node.children : [];
}

/** A string equal for two subtrees exactly when their class names match recursively. */
export function classSignature(node, memo = new WeakMap()) {
  if (memo.has(node)) return memo.get(node);
  const kids = childrenOf(node);
  const inner = kids.map((child) => classSignature(child, memo)).join(",");
  const signature = kids.length ? `${node.cls}(${inner})` : String(node.cls);
  memo.set(node, signature);
  return signature;
}

/**
 * Split `parent`'s children into items: { type: "node", node } for single
 * children and { type: "group", key, label, cls, members, params } for runs of
 * two or more consecutive integer-named siblings with the same class signature.
 */
export function groupChildren(parent, memo = new WeakMap()) {
  const kids = childrenOf(parent);
  const items = [];
  let i = 0;
  while (i < kids.length) {
    const first = kids[i];
    let j = i + 1;
    if (INTEGER.test(String(first.name))) {
      const signature = classSignature(first, memo);
      while (
        j < kids.length &&
        INTEGER.test(String(kids[j].name)) &&
        classSignature(kids[j], memo) === signature
      ) {
        j++;
      }
    }
    if (j - i >= 2) {
      const members = kids.slice(i, j);
      const last = members[members.length - 1];
      items.push({
        type: "group",
        key: `${parent.path}[${first.name}-${last.name}]`,
        label: `${parent.name}.${first.name}-${last.name}`,
        cls: first.cls,
        members,
        params: members.reduce((sum, m) => sum + (Number(m.params) || 0), 0),
      });
    } else {
      items.push({ type: "node", node: first });
      j = i + 1;
    }
    i = j;
  }
  return items;
}

/**
 * Nodes kept by a search: those whose path or class contains `query`
 * (case-insensitive) and their ancestors. Returns null for an empty query, else
 * { visible: Set<path>, matches: Set<path>, open: Set<path> } where `open`
 * holds the strict ancestors of matches (the nodes to expand).
 */
export function filterTree(root, query) {
  const q = String(query ?? "")
    .trim()
    .toLowerCase();
  if (!q || !root) return null;
  const visible = new Set();
  const matches = new Set();
  const open = new Set();
  const visit = (node) => {
    const self =
      String(node.path ?? "")
        .toLowerCase()
        .includes(q) ||
      String(node.cls ?? "")
        .toLowerCase()
        .includes(q);
    let below = false;
    for (const child of childrenOf(node)) below = visit(child) || below;
    if (self) matches.add(node.path);
    if (below) open.add(node.path);
    if (self || below) visible.add(node.path);
    return self || below;
  };
  visit(root);
  return { visible, matches, open };
}

/** The nodes from the root down to the node with `path` (inclusive), or null. */
export function ancestry(root, path) {
  if (!root) return null;
  if (root.path === path) return [root];
  for (const child of childrenOf(root)) {
    const found = ancestry(child, path);
    if (found) return [root, ...found];
  }
  return null;
}

/** Number of nodes in the tree (for a summary line). */
export function countNodes(root) {
  if (!root) return 0;
  let n = 1;
  for (const child of childrenOf(root)) n += countNodes(child);
  return n;
}
