// The widgets and where their bundles go; shared by build.mjs and the tests.
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const WIDGETS = ["module_tree", "source_view", "attention_view", "patching_heatmap"];
export const OUT_DIR = resolve(
  dirname(fileURLToPath(import.meta.url)),
  "../nnsight_lab/jupyter/static",
);
