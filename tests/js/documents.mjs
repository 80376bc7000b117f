// Documents written and read by real Yjs, for the document-logic tests (tests/unit/test_documents_*.py).
//
// One-shot: reads one JSON command on stdin, writes one JSON reply on stdout.
//   {"cmd":"build"}  -> {name: {update, json, deltas, records?}}  scenarios of every root type, updates in
//                       base64, json = each root's toJSON() as Yjs sees it, deltas = each text root's
//                       toDelta() (formatting, embeds), records = YKeyValue's view of tl_board
//   {"cmd":"apply","updates":[b64...],"roots":{name: type},"records":"tl_x"?}
//                    -> {json, deltas, records?, liveRecords?, liveChanged?, pending}  the updates applied in
//                       order to a fresh Y.Doc; live* = what a YKeyValue attached after the first update saw
//   {"cmd":"varints","values":[n...]} -> [b64...]  lib0's signed varint encoding of each number
import * as Y from 'yjs'
import { YKeyValue } from 'y-utility/y-keyvalue'
import * as encoding from 'lib0/encoding'

const b64 = (u8) => Buffer.from(u8).toString('base64')
const fromB64 = (s) => new Uint8Array(Buffer.from(s, 'base64'))

const getRoot = (doc, name, type) => {
  switch (type) {
    case 'text': return doc.getText(name)
    case 'map': return doc.getMap(name)
    case 'array': return doc.getArray(name)
    case 'xml_fragment': return doc.getXmlFragment(name)
    default: throw new Error(`unknown root type ${type}`)
  }
}

const rootsJson = (doc, roots) =>
  Object.fromEntries(Object.entries(roots).map(([name, type]) => [name, getRoot(doc, name, type).toJSON()]))

// toJSON() shows a text's characters only; its delta shows formatting and embeds too.
const textDeltas = (doc, roots) =>
  Object.fromEntries(Object.entries(roots).filter(([, type]) => type === 'text').map(([name]) => [name, doc.getText(name).toDelta()]))

// YKeyValue cleans up duplicate keys in the doc it is given: read records from a copy.
const recordsOf = (update, name) => {
  const copy = new Y.Doc()
  Y.applyUpdate(copy, update)
  const kv = new YKeyValue(copy.getArray(name))
  return Object.fromEntries([...kv.map.entries()].map(([key, entry]) => [key, entry.val]))
}

const scenario = (doc, roots, records) => {
  const update = Y.encodeStateAsUpdate(doc)
  const out = { update: b64(update), json: rootsJson(doc, roots), deltas: textDeltas(doc, roots), roots }
  if (records) out.records = recordsOf(update, records)
  return out
}

// Two clients editing concurrently, synced both ways: origins cross clients.
const sync = (a, b) => {
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)))
  Y.applyUpdate(a, Y.encodeStateAsUpdate(b, Y.encodeStateVector(a)))
}

const build = () => {
  const out = {}

  { // Y.Text typed in many transactions by two clients, formatted, partly deleted, with an embed
    const a = new Y.Doc(); const b = new Y.Doc()
    const ta = a.getText('text'); const tb = b.getText('text')
    for (const ch of 'héllo 😀 ') ta.insert(ta.length, ch)
    sync(a, b)
    tb.insert(0, 'Start: ', { bold: true })
    ta.insert(ta.length, 'world')
    sync(a, b)
    ta.delete(1, 2)
    tb.insertEmbed(tb.length, { image: 'cat.png' })
    sync(a, b)
    tb.format(0, 3, { italic: true })
    sync(a, b)
    out.text = scenario(a, { text: 'text' })
  }
  { // Y.Map with nested types, overwritten and deleted keys
    const doc = new Y.Doc()
    const map = doc.getMap('map')
    map.set('n', 1)
    map.set('s', 'str')
    map.set('n', 2)
    map.set('obj', { deep: [1, { x: true }], nil: null })
    // lib0 writes integers within 31 bits as signed varints, others as float32/float64
    map.set('numbers', [0, -1, 63, 64, -64, -65, 8191, -123456789, 2 ** 31, 2 ** 40, -(2 ** 52), 1.5, -0.25, 0.1])
    map.set('gone', 'x')
    map.delete('gone')
    const nested = new Y.Map()
    map.set('nested', nested)
    nested.set('list', Y.Array.from([1, 2, 3]))
    nested.set('t', new Y.Text('inner'))
    out.map = scenario(doc, { map: 'map' })
  }
  { // Y.Array: pushes, inserts at the front (right origins), deletes, nested types
    const a = new Y.Doc(); const b = new Y.Doc()
    const arr = a.getArray('array')
    arr.push([1, 2, 3])
    sync(a, b)
    b.getArray('array').insert(0, ['front'])
    arr.insert(1, [{ k: 'v' }])
    sync(a, b)
    arr.delete(2, 1)
    const m = new Y.Map(); m.set('inside', 42)
    arr.push([m, new Uint8Array([1, 2])])
    out.array = scenario(a, { array: 'array' })
  }
  { // Y.XmlFragment: an element with an attribute and text, and text at the top
    const doc = new Y.Doc()
    const frag = doc.getXmlFragment('xml')
    const p = new Y.XmlElement('p')
    p.setAttribute('class', 'lead')
    const t = new Y.XmlText(); t.insert(0, 'hello')
    p.insert(0, [t])
    const tail = new Y.XmlText(); tail.insert(0, 'tail')
    frag.insert(0, [p, tail])
    out.xml = scenario(doc, { xml: 'xml_fragment' })
  }
  { // tldraw layout: YKeyValue records in tl_board, schema in meta; concurrent sets leave duplicates
    const a = new Y.Doc(); const b = new Y.Doc()
    const kvA = new YKeyValue(a.getArray('tl_board'))
    a.getMap('meta').set('schema', { schemaVersion: 2, sequences: { 'com.tldraw.shape': 4 } })
    const shape = (id, x) => ({ id, typeName: 'shape', type: 'geo', x, y: 0, props: { w: 10, h: 10 } })
    kvA.set('document:document', { id: 'document:document', typeName: 'document', name: '' })
    kvA.set('page:page', { id: 'page:page', typeName: 'page', name: 'Page 1', index: 'a1' })
    kvA.set('shape:1', shape('shape:1', 1))
    kvA.set('shape:2', shape('shape:2', 2))
    kvA.set('shape:1', shape('shape:1', 10))
    kvA.delete('shape:2')
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a))
    // b has no YKeyValue attached, so nothing cleans up: both entries for shape:3 stay in the array.
    b.getArray('tl_board').push([{ key: 'shape:3', val: shape('shape:3', 3) }])
    kvA.set('shape:3', shape('shape:3', 30))
    const merged = new Y.Doc()
    Y.applyUpdate(merged, Y.encodeStateAsUpdate(a))
    Y.applyUpdate(merged, Y.encodeStateAsUpdate(b))
    out.tldraw = scenario(merged, { tl_board: 'array', meta: 'map' }, 'tl_board')
  }
  { // a text whose content is all deleted: nothing in the update tells its type
    const doc = new Y.Doc()
    const t = doc.getText('gone')
    t.insert(0, 'abc')
    t.delete(0, 3)
    doc.getMap('kept').set('k', 'v')
    out.emptied = scenario(doc, { gone: 'text', kept: 'map' })
  }
  return out
}

const apply = ({ updates, roots, records }) => {
  const doc = new Y.Doc()
  for (const u of updates) Y.applyUpdate(doc, fromB64(u))
  const out = { json: rootsJson(doc, roots), deltas: textDeltas(doc, roots), pending: doc.store.pendingStructs !== null || doc.store.pendingDs !== null }
  if (records) {
    out.records = recordsOf(Y.encodeStateAsUpdate(doc), records)
    // As a connected tldraw client sees it: a YKeyValue attached after the first update, whose observer
    // then takes in the others (and cleans up duplicates in its own transactions, as in a browser).
    const live = new Y.Doc()
    Y.applyUpdate(live, fromB64(updates[0]))
    const kv = new YKeyValue(live.getArray(records))
    const changed = new Set()
    kv.on('change', (changes) => { for (const key of changes.keys()) changed.add(key) })
    for (const u of updates.slice(1)) Y.applyUpdate(live, fromB64(u))
    out.liveRecords = Object.fromEntries([...kv.map.entries()].map(([key, entry]) => [key, entry.val]))
    out.liveChanged = [...changed].sort()
  }
  return out
}

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const request = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const varints = ({ values }) => values.map((n) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarInt(encoder, n)
  return b64(encoding.toUint8Array(encoder))
})

const handlers = { build, apply, varints }
if (!Object.hasOwn(handlers, request.cmd)) throw new Error(`unknown command ${JSON.stringify(request.cmd)}`)
process.stdout.write(JSON.stringify(handlers[request.cmd](request)) + '\n')
