/** Helpers around the anywidget model API (get/set/on/off/save_changes). */

/** Subscribe `callback` to change:<name> for each name; returns the unsubscribe function. */
export function onChange(model, names, callback) {
  const events = names.map((name) => `change:${name}`);
  for (const event of events) model.on(event, callback);
  return () => {
    for (const event of events) model.off(event, callback);
  };
}

/** Write a trait from the browser and send it to the kernel. */
export function save(model, name, value) {
  model.set(name, value);
  model.save_changes();
}

/** model.get(name), or `fallback` when the trait is missing or null. */
export function read(model, name, fallback) {
  const value = model.get(name);
  return value == null ? fallback : value;
}

/** An integer trait, or `fallback` when it is not a finite number. */
export function readInt(model, name, fallback = 0) {
  const value = Number(model.get(name));
  return Number.isFinite(value) ? Math.trunc(value) : fallback;
}

/** A list trait (JSON list or list of strings); anything else reads as []. */
export function readList(model, name) {
  const value = model.get(name);
  return Array.isArray(value) ? value : [];
}

/**
 * Coalesce several synchronous trait changes (values and shape arrive together)
 * into one call of `fn` on the next microtask. `cancel()` drops a pending call.
 */
export function batched(fn) {
  let queued = false;
  let cancelled = false;
  const schedule = () => {
    if (queued || cancelled) return;
    queued = true;
    queueMicrotask(() => {
      queued = false;
      if (!cancelled) fn();
    });
  };
  schedule.cancel = () => {
    cancelled = true;
  };
  return schedule;
}
