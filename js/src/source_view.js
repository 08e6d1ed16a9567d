/**
 * SourceView: a module's forward source with its operations as chips beside
 * each line. Clicking a chip selects `<module_path>.source.<op>.output`
 * (trait `selected`) and copies it.
 */
import { selectAndCopy } from "./lib/clipboard.js";
import { h, listen } from "./lib/dom.js";
import { batched, onChange, read, readList } from "./lib/model.js";
import { mountRoot, teardown } from "./lib/widget.js";
import css from "./styles/source_view.css?raw";

/** The access path an operation chip selects. */
export function operationPath(modulePath, op) {
  return `${modulePath}.source.${op}.output`;
}

function lineRow(line, modulePath, selected) {
  const ops = Array.isArray(line?.ops) ? line.ops : [];
  let lineSelected = false;
  const chips = ops.map((op) => {
    const path = operationPath(modulePath, op);
    const isSelected = path === selected;
    lineSelected ||= isSelected;
    return h("button", {
      class: isSelected ? "nnsight-op is-selected" : "nnsight-op",
      type: "button",
      title: `${path}: click to select and copy`,
      "aria-pressed": String(isSelected),
      dataset: { op: String(op) },
      text: String(op),
    });
  });
  const number = line?.number == null ? "" : String(line.number);
  return h(
    "tr",
    {
      class: lineSelected ? "nnsight-source-line is-selected" : "nnsight-source-line",
      dataset: { number },
    },
    [
      h("td", { class: "nnsight-ops" }, chips),
      h("td", { class: "nnsight-lineno", text: number }),
      h("td", { class: "nnsight-code", text: String(line?.text ?? "") }),
    ],
  );
}

function render({ model, el }) {
  const { root, stop: stopAttach } = mountRoot(el, "nnsight-source-view", css);
  const heading = h("span", { class: "nnsight-module-path" });
  const hint = h("span", { class: "nnsight-muted", text: "click an operation to select it" });
  const listing = h("div", { class: "nnsight-listing" });
  const status = h("div", { class: "nnsight-status", "aria-live": "polite" });
  root.append(h("div", { class: "nnsight-toolbar" }, [heading, hint]), listing, status);
  let note = "";

  const draw = () => {
    const modulePath = String(read(model, "module_path", ""));
    const selected = String(read(model, "selected", ""));
    const lines = readList(model, "lines");
    heading.textContent = modulePath ? `${modulePath}.source` : "source";
    listing.replaceChildren();
    if (!lines.length) {
      listing.append(h("div", { class: "nnsight-message", text: "No source to show." }));
    } else {
      const body = h(
        "tbody",
        {},
        lines.map((line) => lineRow(line, modulePath, selected)),
      );
      listing.append(h("table", { class: "nnsight-source-table" }, body));
    }
    status.textContent = selected ? `selected: ${selected}${note}` : "";
  };
  const schedule = batched(draw);

  const onClick = (event) => {
    const chip = event.target.closest?.(".nnsight-op");
    if (!chip || !listing.contains(chip)) return;
    const path = operationPath(String(read(model, "module_path", "")), chip.dataset.op);
    note = "";
    selectAndCopy(model, path, () => {
      note = " (copied)";
      draw();
    });
    draw();
  };

  const off = onChange(model, ["lines", "module_path", "selected"], () => {
    note = "";
    schedule();
  });
  const offClick = listen(listing, "click", onClick);
  draw();

  return teardown(root, [schedule.cancel, stopAttach, off, offClick]);
}

export default { render };
