/** A fake anywidget model and small render helpers for the widget tests. */
import { vi } from "vitest";

/**
 * Behaves like the Backbone model anywidget wraps: set() stores the value and
 * fires change:<name> synchronously when the value changed; receive() is a
 * change arriving from the kernel.
 */
export function fakeModel(initial = {}) {
  const data = { ...initial };
  const listeners = new Map();
  const fire = (name) => {
    for (const callback of [...(listeners.get(`change:${name}`) ?? [])]) callback();
  };
  return {
    data,
    get: vi.fn((name) => data[name]),
    set: vi.fn((name, value) => {
      const changed = JSON.stringify(data[name]) !== JSON.stringify(value);
      data[name] = value;
      if (changed) fire(name);
    }),
    save_changes: vi.fn(),
    on: vi.fn((event, callback) => {
      if (!listeners.has(event)) listeners.set(event, new Set());
      listeners.get(event).add(callback);
    }),
    off: vi.fn((event, callback) => {
      listeners.get(event)?.delete(callback);
    }),
    receive(changes) {
      Object.assign(data, changes);
      for (const name of Object.keys(changes)) fire(name);
    },
    listenerCount() {
      let n = 0;
      for (const set of listeners.values()) n += set.size;
      return n;
    },
  };
}

/** Let batched re-renders (queued microtasks) and resolved promises run. */
export function flush() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Render `widget` into a fresh element attached to the document. */
export function mount(widget, model) {
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = widget.render({ model, el });
  return { el, cleanup };
}

/** A float32 buffer as anywidget delivers it: a DataView over little-endian bytes. */
export function dataView(values) {
  const buffer = new ArrayBuffer(values.length * 4);
  const view = new DataView(buffer);
  values.forEach((v, i) => {
    view.setFloat32(i * 4, v, true);
  });
  return view;
}

export function click(element, init = {}) {
  element.dispatchEvent(new MouseEvent("click", { bubbles: true, ...init }));
}

export function mouse(element, type, clientX, clientY) {
  element.dispatchEvent(new MouseEvent(type, { bubbles: true, clientX, clientY }));
}

/** A GPT-2-shaped module tree with `blocks` transformer blocks. */
/** The rows `gpt2Tree()` shows by default: the root, its first level, blocks folded. */
export const GPT2_FIRST_ROWS = [
  "llm",
  "llm.transformer",
  "llm.transformer.wte",
  "llm.transformer.wpe",
  "llm.transformer.h",
  "llm.transformer.ln_f",
  "llm.lm_head",
];

export function gpt2Tree(blocks = 12) {
  const leaf = (name, path, cls, params) => ({ name, path, cls, params, children: [] });
  const block = (i) => {
    const p = `llm.transformer.h[${i}]`;
    return {
      name: String(i),
      path: p,
      cls: "GPT2Block",
      params: 7087872,
      children: [
        leaf("ln_1", `${p}.ln_1`, "LayerNorm", 1536),
        {
          name: "attn",
          path: `${p}.attn`,
          cls: "GPT2Attention",
          params: 2362368,
          children: [
            leaf("c_attn", `${p}.attn.c_attn`, "Conv1D", 1771776),
            leaf("c_proj", `${p}.attn.c_proj`, "Conv1D", 590592),
          ],
        },
        leaf("ln_2", `${p}.ln_2`, "LayerNorm", 1536),
        {
          name: "mlp",
          path: `${p}.mlp`,
          cls: "GPT2MLP",
          params: 4722432,
          children: [
            leaf("c_fc", `${p}.mlp.c_fc`, "Conv1D", 2362368),
            leaf("c_proj", `${p}.mlp.c_proj`, "Conv1D", 2360064),
          ],
        },
      ],
    };
  };
  return {
    name: "llm",
    path: "llm",
    cls: "GPT2LMHeadModel",
    params: 124439808,
    children: [
      {
        name: "transformer",
        path: "llm.transformer",
        cls: "GPT2Model",
        params: 124439808,
        children: [
          leaf("wte", "llm.transformer.wte", "Embedding", 38597376),
          leaf("wpe", "llm.transformer.wpe", "Embedding", 786432),
          {
            name: "h",
            path: "llm.transformer.h",
            cls: "ModuleList",
            params: 85054464,
            children: Array.from({ length: blocks }, (_, i) => block(i)),
          },
          leaf("ln_f", "llm.transformer.ln_f", "LayerNorm", 1536),
        ],
      },
      leaf("lm_head", "llm.lm_head", "Linear", 38597376),
    ],
  };
}
