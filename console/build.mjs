// Builds the web console (docs/console.md) into dist/console: console/src/main.ts bundled by
// esbuild with the generated client (gen/) and uPlot, next to index.html, style.css and uPlot's
// stylesheet. Run by `npm run build` (so `make build`, and before the tests: test/global-setup.ts).
// Nothing is fetched at run time: the admin listener serves these files (src/server/console-api.ts).
import { copyFile, mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = `${root}dist/console`;

await mkdir(out, { recursive: true });
await build({
  entryPoints: [`${root}console/src/main.ts`],
  outfile: `${out}/app.js`,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  legalComments: "eof",
  logLevel: "warning",
});
await Promise.all([
  copyFile(`${root}console/index.html`, `${out}/index.html`),
  copyFile(`${root}console/style.css`, `${out}/style.css`),
  copyFile(`${root}node_modules/uplot/dist/uPlot.min.css`, `${out}/uplot.css`),
]);
