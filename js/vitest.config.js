import { defineConfig } from "vitest/config";

export default defineConfig({
  // The bundle smoke test imports the built files from ../nnsight_lab/jupyter/static.
  server: { fs: { allow: [".."] } },
  test: {
    environment: "jsdom",
    setupFiles: ["./test/setup.js"],
    include: ["test/**/*.test.js"],
  },
});
