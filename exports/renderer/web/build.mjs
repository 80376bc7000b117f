// Bundle the renderer page into dist/: render.js + tldraw.css + index.html, and tldraw's fonts and icons
// under dist/assets/ (the page points tldraw's assetUrls there: nothing is fetched from a CDN).
// scripts/build-renderer runs this and records what it was built from, so it rebuilds only after changes.
import { build } from 'esbuild'
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const dist = join(here, 'dist')
rmSync(dist, { recursive: true, force: true })
mkdirSync(join(dist, 'assets'), { recursive: true })

await build({
  entryPoints: [join(here, 'src', 'render.tsx')],
  bundle: true,
  format: 'esm',
  jsx: 'automatic',
  minify: true,
  target: 'chrome120',
  outfile: join(dist, 'render.js'),
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
})

const assets = join(here, 'node_modules', '@tldraw', 'assets')
for (const folder of ['fonts', 'icons', 'translations', 'embed-icons']) {
  cpSync(join(assets, folder), join(dist, 'assets', folder), { recursive: true })
}
cpSync(join(here, 'node_modules', 'tldraw', 'tldraw.css'), join(dist, 'tldraw.css'))
writeFileSync(
  join(dist, 'index.html'),
  `<!doctype html>
<html><head><meta charset="utf-8"><link rel="stylesheet" href="/tldraw.css">
<style>html,body,#root{margin:0;width:1280px;height:800px;overflow:hidden}</style></head>
<body><div id="root"></div><script type="module" src="/render.js"></script></body></html>
`,
)
// scripts/build-renderer writes dist/.built-from (a hash of the sources) after a successful build
console.log('renderer bundle written to', dist)
