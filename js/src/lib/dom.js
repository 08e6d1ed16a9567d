/**
 * Tiny element builder: h("div", { class: "x", text: "hi", onclick }, [children]).
 * Text always goes through textContent, never innerHTML (tokens and paths are user data).
 */
export function h(tag, props = {}, children = []) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "style") Object.assign(el.style, value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of [].concat(children)) {
    if (child != null && child !== false) el.append(child);
  }
  return el;
}

/** Toggle `className` on `el` according to `on`. */
export function setClass(el, className, on) {
  el.classList.toggle(className, Boolean(on));
}
