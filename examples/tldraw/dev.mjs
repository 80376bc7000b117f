// `npm run dev`: bundle the app with esbuild (rebuilt on change) and serve it on http://127.0.0.1:5173,
// passing /api/* through to the collab server (COLLAB_URL, default http://127.0.0.1:8000) so the Export menu
// needs no CORS. The board's websocket goes to the server directly. `--build` only writes dist/ and exits.
import { context } from 'esbuild'
import { cpSync, mkdirSync, readFileSync, existsSync } from 'node:fs'
import { createServer, request as httpRequest } from 'node:http'
import { dirname, extname, join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const dist = join(here, 'dist')
const server = new URL(process.env.COLLAB_URL || 'http://127.0.0.1:8000')
const port = Number(process.env.PORT || 5173)

mkdirSync(join(dist, 'assets'), { recursive: true })
for (const folder of ['fonts', 'icons', 'translations', 'embed-icons']) {
  cpSync(join(here, 'node_modules', '@tldraw', 'assets', folder), join(dist, 'assets', folder), { recursive: true })
}
cpSync(join(here, 'node_modules', 'tldraw', 'tldraw.css'), join(dist, 'tldraw.css'))
cpSync(join(here, 'index.html'), join(dist, 'index.html'))

const ctx = await context({
  entryPoints: [join(here, 'src', 'main.tsx')],
  bundle: true,
  format: 'esm',
  jsx: 'automatic',
  target: 'chrome120',
  outfile: join(dist, 'app.js'),
  // the shared board module lives beside the export renderer; its imports resolve from this app's packages
  nodePaths: [join(here, 'node_modules')],
  define: { 'process.env.NODE_ENV': '"development"' },
  logLevel: 'warning',
})
if (process.argv.includes('--build')) {
  await ctx.rebuild()
  await ctx.dispose()
  console.log('example app written to', dist)
  process.exit(0)
}
await ctx.watch()

const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.woff2': 'font/woff2', '.json': 'application/json', '.png': 'image/png' }
createServer((req, res) => {
  if (req.url.startsWith('/api/')) {
    const upstream = httpRequest({ host: server.hostname, port: server.port, path: req.url, method: req.method, headers: { ...req.headers, host: server.host } }, (reply) => {
      res.writeHead(reply.statusCode, reply.headers)
      reply.pipe(res)
    })
    upstream.on('error', (error) => { res.writeHead(502); res.end(`collab server unreachable: ${error.message}`) })
    req.pipe(upstream)
    return
  }
  const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '')
  const file = join(dist, path === '/' ? 'index.html' : path)
  if (!file.startsWith(dist) || !existsSync(file)) { res.writeHead(404); res.end('not found'); return }
  res.writeHead(200, { 'content-type': types[extname(file)] || 'application/octet-stream' })
  res.end(readFileSync(file))
}).listen(port, '127.0.0.1', () => console.log(`example app on http://127.0.0.1:${port} (server ${server.origin})`))
