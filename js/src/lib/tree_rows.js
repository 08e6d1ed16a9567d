/**
 * The rows the module tree shows, in order, from the tree, the fold state and
 * an optional search filter (see filterTree). Pure, so it is tested apart from
 * the DOM.
 *
 * `expanded` maps a node path or group key to true/false where the person
 * toggled it. Unset nodes follow the defaults: without a filter the root and
 * its first level are open and groups are closed; with a filter the ancestors
 * of matches and the groups holding matches are open.
 */
import { ancestry, childrenOf, groupChildren } from "./tree.js";

export function treeRows(root, { expanded = new Map(), filter = null, memo = new WeakMap() } = {}) {
  const rows = [];
  if (!root) return rows;
  const nodeOpen = (node, depth) => {
    if (expanded.has(node.path)) return expanded.get(node.path);
    return filter ? filter.open.has(node.path) : depth <= 1;
  };
  const visit = (node, depth) => {
    if (filter && !filter.visible.has(node.path)) return;
    const hasChildren = childrenOf(node).length > 0;
    const open = hasChildren && nodeOpen(node, depth);
    const match = filter ? filter.matches.has(node.path) : false;
    rows.push({ kind: "node", node, depth, hasChildren, open, match });
    if (!open) return;
    for (const item of groupChildren(node, memo)) {
      if (item.type === "node") {
        visit(item.node, depth + 1);
        continue;
      }
      const members = filter
        ? item.members.filter((m) => filter.visible.has(m.path))
        : item.members;
      if (!members.length) continue;
      const groupOpen = expanded.has(item.key) ? expanded.get(item.key) : Boolean(filter);
      rows.push({ kind: "group", group: item, depth: depth + 1, open: groupOpen, shown: members });
      if (groupOpen) for (const member of members) visit(member, depth + 2);
    }
  };
  visit(root, 0);
  return rows;
}

/**
 * Mark in `expanded` every node and group on the way to `path`, so that node
 * shows. Returns false when no node has that path.
 */
export function reveal(root, path, expanded, memo = new WeakMap()) {
  const chain = ancestry(root, path);
  if (!chain) return false;
  for (let i = 0; i < chain.length - 1; i++) {
    const parent = chain[i];
    const child = chain[i + 1];
    expanded.set(parent.path, true);
    for (const item of groupChildren(parent, memo)) {
      if (item.type === "group" && item.members.includes(child)) expanded.set(item.key, true);
    }
  }
  return true;
}
