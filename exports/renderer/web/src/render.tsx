// The export page: the worker keeps one open with the editor mounted and calls window.collabRender per job,
// then window.collabReset (exports/browser.py says why reusing the page is safe). The board is loaded into a
// real tldraw editor and exported by tldraw itself (getSvgString / toImage), so text is laid out by the
// browser exactly as users see it. Fonts and icons come from /assets/.
import { createRoot } from 'react-dom/client'
import { Editor, Tldraw, createTLStore, parseTldrawJsonFile, type TLPageId, type TLRecord, type TLShapeId } from 'tldraw'
import { getAssetUrls } from '@tldraw/assets/selfHosted'
import { boardSnapshot, type BoardData } from './board'
import { drawSampleBoard } from './sample'

interface RenderOptions {
  page: string | null
  background: boolean
  scale: number
  pixel_ratio: number
  padding: number
  dark_mode: boolean
  pdf_pages: 'all' | 'page'
}

interface RenderRequest {
  board: BoardData
  format: 'svg' | 'png' | 'pdf'
  options: RenderOptions
  rasterAbove: number
  maxPixels: number
}

interface PageImage {
  kind: 'svg' | 'png'
  data: string // SVG markup, or PNG as base64
  width: number
  height: number
  pixelRatio?: number
}

declare global {
  interface Window {
    collabConfig?: { licenseKey?: string }
    // the request comes as JSON text: one string crosses the DevTools protocol far faster than a tree of values
    collabRender: (request: string) => Promise<{ pages: PageImage[]; shapes: number; timings: Record<string, number> }>
    collabReset: () => Promise<number>
    collabEditor?: Editor
    collabReady?: boolean
    collabSampleBoard: (n: number) => Promise<BoardData>
    collabParseTldr: (json: string) => TLRecord[]
  }
}

const assetUrls = getAssetUrls({ baseUrl: '/assets' })

// The editor is mounted empty as soon as the page loads: the worker keeps a loaded page in reserve, so a
// job only loads its board into a ready editor (window.collabReady says when).
const editorReady: Promise<Editor> = new Promise((resolve) => {
  createRoot(document.getElementById('root')!).render(
    <Tldraw
      hideUi
      // no canvas: nobody looks at this page, and tldraw's exporter renders the shapes it exports itself
      // (the same SVG, byte for byte); a mounted canvas would render and lay out every shape of the board
      // a second time on each job
      components={{ Canvas: null }}
      licenseKey={window.collabConfig?.licenseKey || undefined}
      assetUrls={assetUrls}
      onMount={(editor) => {
        window.collabEditor = editor
        resolve(editor)
      }}
    />,
  )
})
editorReady.then(() => document.fonts.ready).then(() => { window.collabReady = true })

async function load(board: BoardData): Promise<Editor> {
  const editor = await editorReady
  const snapshot = boardSnapshot(editor.store.schema.serialize(), board) // board_too_new
  try {
    editor.store.loadStoreSnapshot(snapshot) // migrates and validates every record
  } catch (error) {
    throw new Error(`invalid_board: ${error instanceof Error ? error.message : String(error)}`)
  }
  return editor
}

function pagesToExport(editor: Editor, request: RenderRequest): TLPageId[] {
  const pages = editor.getPages()
  if (request.format === 'pdf' && request.options.pdf_pages === 'all' && request.options.page === null) {
    return pages.map((page) => page.id)
  }
  const wanted = request.options.page
  if (wanted === null) return [pages[0].id]
  const found = pages.find((page) => page.id === wanted || page.name === wanted)
  if (!found) throw new Error(`invalid_board: no page ${JSON.stringify(wanted)} (pages: ${pages.map((p) => p.name).join(', ')})`)
  return [found.id]
}

async function blobToBase64(blob: Blob): Promise<string> {
  const bytes = new Uint8Array(await blob.arrayBuffer())
  let binary = ''
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(binary)
}

async function exportPage(editor: Editor, ids: TLShapeId[], kind: 'svg' | 'png', o: RenderOptions, maxPixels: number): Promise<PageImage> {
  const common = { background: o.background, padding: o.padding, darkMode: o.dark_mode, scale: o.scale }
  if (kind === 'svg') {
    const result = await editor.getSvgString(ids, common)
    if (!result) throw new Error('render_failed: tldraw returned no SVG')
    return { kind, data: result.svg, width: result.width, height: result.height }
  }
  // A bitmap is capped at maxPixels (a board much larger than a screen at pixel ratio 2 is a canvas of
  // hundreds of megapixels: slow, and past Chromium's canvas limit): the pixel ratio is lowered to fit.
  const bounds = editor.getShapesPageBounds(ids)
  const area = bounds ? (bounds.w * o.scale + 2 * o.padding) * (bounds.h * o.scale + 2 * o.padding) : 1
  const pixelRatio = Math.min(o.pixel_ratio, Math.sqrt(maxPixels / Math.max(area, 1)))
  const result = await editor.toImage(ids, { ...common, format: 'png', pixelRatio })
  return { kind, data: await blobToBase64(result.blob), width: result.width, height: result.height, pixelRatio }
}

// How many jobs this page has rendered (a page is reused; the job's details report it).
let jobs = 0

window.collabRender = async (requestJson) => {
  const t0 = performance.now()
  const request = JSON.parse(requestJson) as RenderRequest
  jobs += 1
  const editor = await load(request.board)
  const timings: Record<string, number> = { load_ms: Math.round(performance.now() - t0), page_job: jobs }
  const pages: PageImage[] = []
  let shapes = 0
  for (const pageId of pagesToExport(editor, request)) {
    editor.setCurrentPage(pageId)
    const ids = [...editor.getPageShapeIds(pageId)]
    if (ids.length === 0) {
      if (request.format === 'pdf' && request.options.pdf_pages === 'all') continue
      throw new Error(`invalid_board: page ${JSON.stringify(editor.getPage(pageId)?.name)} has no shapes to export`)
    }
    shapes += ids.length
    // PDF pages are SVG (vector) unless the board is very large, where a raster page is much faster
    const kind = request.format === 'png' || (request.format === 'pdf' && ids.length > request.rasterAbove) ? 'png' : 'svg'
    const t1 = performance.now()
    pages.push(await exportPage(editor, ids, kind, request.options, request.maxPixels))
    timings.export_ms = (timings.export_ms ?? 0) + Math.round(performance.now() - t1)
  }
  if (pages.length === 0) throw new Error('invalid_board: the board has no shapes to export')
  return { pages, shapes, timings }
}

// After a job: nothing of its board stays in the page. The store is emptied (every record, the session's
// too: loadStoreSnapshot clears the store and tldraw recreates an empty document and page), the undo
// history (which would hold the board's records) is dropped, and the camera goes back to the origin.
// Returns how many records are left (the empty document's own: its document, page and session records).
window.collabReset = async () => {
  const editor = await editorReady
  editor.store.loadStoreSnapshot({ store: {}, schema: editor.store.schema.serialize() } as never)
  editor.clearHistory()
  editor.setCamera({ x: 0, y: 0, z: 1 })
  return editor.store.allRecords().filter((r) => ['shape', 'binding', 'asset'].includes(r.typeName)).length
}

// A board drawn by tldraw itself (benchmarks, renderer tests): mounts an empty editor, draws, returns records.
window.collabSampleBoard = async (n) => {
  const editor = await editorReady
  drawSampleBoard(editor, n)
  const records = editor.store.allRecords().filter((r) => ['document', 'page', 'shape', 'binding', 'asset'].includes(r.typeName))
  return { records, schema: editor.store.schema.serialize() }
}

// Open a .tldr file as tldraw's "Open" does and return its records (the tests' round trip).
window.collabParseTldr = (json) => {
  const parsed = parseTldrawJsonFile({ json, schema: createTLStore().schema })
  if (!parsed.ok) throw new Error(`invalid_board: not a readable .tldr file (${parsed.error.type})`)
  return parsed.value.allRecords()
}
