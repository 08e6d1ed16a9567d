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

/** Add `handler` for `type` events on `target`; returns the function that removes it. */
export function listen(target, type, handler) {
  target.addEventListener(type, handler);
  return () => target.removeEventListener(type, handler);
}

/** Toggle `className` on `el` according to `on`. */
export function setClass(el, className, on) {
  el.classList.toggle(className, Boolean(on));
}

/**
 * Call `callback` once `el` is in a document. Notebook frontends may render a
 * widget before attaching it, when neither the theme nor a shadow root can be
 * seen yet. Polls once a frame for at most `maxFrames`; returns a cancel function.
 */
export function whenConnected(el, callback, maxFrames = 600) {
  const raf = globalThis.requestAnimationFrame;
  if (el.isConnected || typeof raf !== "function") return () => {};
  let frames = 0;
  let id = 0;
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    if (el.isConnected) callback();
    else if (++frames < maxFrames) id = raf(tick);
  };
  id = raf(tick);
  return () => {
    stopped = true;
    globalThis.cancelAnimationFrame?.(id);
  };
}
