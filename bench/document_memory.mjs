// The Node half of bench/document_memory.py: builds a tldraw board as one Yjs update, and measures what
// Yjs itself (the document library of the reference server and Hocuspocus) holds for it once loaded.
//
//   node bench/document_memory.mjs build --kind tldraw|padded --records N --out FILE
//   node --expose-gc bench/document_memory.mjs measure FILE      -> one line of JSON
//
// Boards use the tldraw-yjs layout of tests/support/boards.py: a Y.Array `tl_board` of {key, val}
// entries, one per record. "padded": the records of bench/large_document.py (a geo shape with a 440-byte
// text, 640 bytes a record), all written by one client. "tldraw": records shaped like the geo shapes
// tldraw 3 writes (every prop, a rich text, random ids and positions), about 500 bytes a record encoded,
// drawn by 50 people taking turns, ten shapes each (a client's consecutive records merge into one item:
// a board drawn by one person would hold fewer, larger items).
import { createRequire } from 'node:module'
import { readFileSync, writeFileSync } from 'node:fs'

const require = createRequire(new URL('../tests/js/package.json', import.meta.url))
const Y = require('yjs')

function random (seed) { // mulberry32: the same board on every run
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const next = random(1)
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-'
const id = (length = 21) => Array.from({ length }, () => ALPHABET[Math.floor(next() * ALPHABET.length)]).join('')
const pick = (choices) => choices[Math.floor(next() * choices.length)]

function padded (i) {
  return {
    id: `shape:${i}`, typeName: 'shape', type: 'geo', x: i % 1000, y: Math.floor(i / 1000), parentId: 'page:page',
    props: { color: 'red', text: 'x'.repeat(440) }
  }
}

function tldraw () {
  const words = Array.from({ length: Math.floor(next() * 7) }, () => id(Math.floor(3 + next() * 8))).join(' ')
  return {
    id: `shape:${id()}`, typeName: 'shape', type: 'geo', parentId: 'page:page', index: `a${id(4)}`,
    x: next() * 10000 - 5000, y: next() * 10000 - 5000, rotation: 0, isLocked: false, opacity: 1, meta: {},
    props: {
      w: 10 + next() * 490, h: 10 + next() * 490, geo: pick(['rectangle', 'ellipse', 'diamond', 'cloud']),
      color: pick(['black', 'blue', 'red', 'green', 'violet']), labelColor: 'black', fill: pick(['none', 'semi', 'solid']),
      dash: 'draw', size: 'm', font: 'draw', align: 'middle', verticalAlign: 'middle', growY: 0, url: '', scale: 1,
      richText: { type: 'doc', content: [{ type: 'paragraph', content: words ? [{ type: 'text', text: words }] : [] }] }
    }
  }
}

function build (kind, records) {
  const doc = new Y.Doc()
  const entries = doc.getArray('tl_board')
  const base = [
    { id: 'document:document', typeName: 'document', gridSize: 10, name: '', meta: {} },
    { id: 'page:page', typeName: 'page', name: 'Page 1', index: 'a1', meta: {} }
  ]
  const [run, authors] = kind === 'padded' ? [1000, 1] : [10, 50]
  entries.push(base.map((val) => ({ key: val.id, val })))
  for (let first = 0; first < records; first += run) {
    doc.clientID = 1000 + (first / run) % authors // the next person's turn (yjs accepts a new client id)
    const chunk = []
    for (let i = first; i < Math.min(first + run, records); i++) {
      const val = kind === 'padded' ? padded(i) : tldraw()
      chunk.push({ key: val.id, val })
    }
    entries.push(chunk)
  }
  return Y.encodeStateAsUpdate(doc)
}

function settle () {
  for (let i = 0; i < 3; i++) global.gc()
  return process.memoryUsage()
}

const [command, ...rest] = process.argv.slice(2)
if (command === 'build') {
  const option = (name, fallback) => { const at = rest.indexOf(`--${name}`); return at < 0 ? fallback : rest[at + 1] }
  const update = build(option('kind', 'tldraw'), Number(option('records', '100000')))
  writeFileSync(option('out'), update)
} else if (command === 'measure') {
  const update = new Uint8Array(readFileSync(rest[0]))
  const before = settle()
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  const after = settle()
  console.log(JSON.stringify({ rss: after.rss - before.rss, heap: after.heapUsed - before.heapUsed, loaded: doc.share.size }))
} else {
  console.error('usage: document_memory.mjs build|measure ...')
  process.exit(2)
}
