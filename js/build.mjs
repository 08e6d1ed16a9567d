// Bundle each widget into one self-contained, minified ES module that anywidget
// loads as `_esm`: nnsight_lab/jupyter/static/<widget>.js. CSS is imported as
// text (`./x.css?raw`, as Vite reads it in the tests) and minified here.
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as esbuild from "esbuild";
import { OUT_DIR, WIDGETS } from "./widgets.mjs";

const here = dirname(fileURLToPath(import.meta.url));

export { OUT_DIR, WIDGETS };

const rawCss = {
  name: "raw-css",
  setup(build) {
    build.onResolve({ filter: /\.css\?raw$/ }, (args) => ({
      path: resolve(args.resolveDir, args.path.replace(/\?raw$/, "")),
      namespace: "raw-css",
    }));
    build.onLoad({ filter: /.*/, namespace: "raw-css" }, async (args) => {
      const source = await readFile(args.path, "utf8");
      const { code } = await esbuild.transform(source, { loader: "css", minify: true });
      return { contents: code.trim(), loader: "text", watchFiles: [args.path] };
    });
  },
};

/** Build every widget; with write: false return { name: text } instead of writing files. */
export async function build({ write = true } = {}) {
  const out = {};
  for (const name of WIDGETS) {
    const result = await esbuild.build({
      entryPoints: [resolve(here, "src", `${name}.js`)],
      outfile: resolve(OUT_DIR, `${name}.js`),
      bundle: true,
      format: "esm",
      target: "es2020",
      minify: true,
      legalComments: "none",
      charset: "utf8",
      banner: {
        js: `/* nnsight_lab ${name} widget: built from js/src by \`npm run build\`; do not edit. */`,
      },
      plugins: [rawCss],
      write,
      logLevel: "warning",
    });
    if (!write) out[name] = result.outputFiles[0].text;
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  await build();
  console.log(`built ${WIDGETS.length} widgets into ${OUT_DIR}`);
}
