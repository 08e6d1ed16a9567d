// @vitest-environment node
// The committed bundles must equal a fresh build of src/: a stale bundle fails
// `npm test`, not only `npm run check-bundle`. (Node environment: esbuild's
// API refuses jsdom's TextEncoder.)
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { build, OUT_DIR, WIDGETS } from "../build.mjs";

describe("committed bundles", () => {
  it("match a fresh build of src/", async () => {
    const fresh = await build({ write: false });
    expect(Object.keys(fresh)).toEqual(WIDGETS);
    for (const name of WIDGETS) {
      const committed = readFileSync(resolve(OUT_DIR, `${name}.js`), "utf8");
      expect(committed === fresh[name], `${name}.js is stale: run \`npm run build\``).toBe(true);
    }
  }, 30000);
});
