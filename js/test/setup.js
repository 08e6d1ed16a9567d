// A 2D canvas context (and ImageData) for jsdom, which has none of its own.
import "vitest-canvas-mock";
