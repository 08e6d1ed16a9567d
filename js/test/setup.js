// A 2D canvas context (and ImageData) for jsdom, which has none of its own.
// Node-environment test files (the bundle freshness check) have no DOM to patch.
if (typeof window !== "undefined") await import("vitest-canvas-mock");
