// Test driver: one long-running Node process hosting many real Yjs clients
// (yjs + y-websocket WebsocketProvider), remote-controlled by pytest.
//
// Protocol: one JSON object per line on stdin  {"id":N,"cmd":"...",...args}
//           one JSON object per line on stdout {"id":N,"ok":true,"result":...}
//                                           or {"id":N,"ok":false,"error":"..."}
// stdout carries replies ONLY; anything else (diagnostics) goes to stderr.
// Commands run concurrently (a pending waitSynced must not block other clients).
// The process exits when stdin closes or on the `shutdown` command.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { YKeyValue } from 'y-utility/y-keyvalue'
import * as prng from 'lib0/prng'
import WebSocket from 'ws'
import { createInterface } from 'node:readline'

const log = (...args) => console.error('[yjs-driver]', ...args)
// Every provider adds a process 'exit' listener; hundreds of clients are expected.
process.setMaxListeners(0)
// Never die because one client misbehaves (e.g. a throw inside a reconnect timer).
process.on('uncaughtException', (err) => log('uncaught exception:', err?.stack ?? err))
process.on('unhandledRejection', (err) => log('unhandled rejection:', err?.stack ?? err))

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1'])
const checkLoopback = (url) => {
  const u = new URL(url) // throws on garbage, which becomes an ok:false reply
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new Error(`not a ws:// URL: ${url}`)
  if (!LOOPBACK.has(u.hostname) && !u.hostname.startsWith('127.')) {
    throw new Error(`refusing non-loopback URL: ${url}`)
  }
}

// The provider instantiates `new WebSocketPolyfill(url, protocols)`, so per-client socket
// options need a per-client subclass.
const makeWebSocketClass = ({ deflate = false, headers = undefined, onError = () => {} } = {}) =>
  class LoopbackWebSocket extends WebSocket {
    constructor (url, protocols) {
      checkLoopback(url)
      // ws enables permessage-deflate by default for clients; browsers offer it too, but tests
      // want the plain path unless they ask for it explicitly.
      super(url, protocols, { perMessageDeflate: deflate, handshakeTimeout: 10000, headers })
      // Node's EventEmitter throws on an 'error' without listeners; the provider sometimes
      // detaches its onerror. Connection refused etc. still surfaces as a close (1006).
      this.on('error', onError)
    }
  }

/** @type {Map<string, any>} client id -> state */
const clients = new Map()

const getClient = (id) => {
  if (typeof id !== 'string') throw new Error(`missing "client" (string), got ${JSON.stringify(id)}`)
  const c = clients.get(id)
  if (!c) throw new Error(`unknown client "${id}"`)
  return c
}

const need = (args, key, type) => {
  const v = args[key]
  if (type === 'array' ? !Array.isArray(v) : typeof v !== type) {
    throw new Error(`"${key}" must be ${type === 'array' ? 'an array' : 'a ' + type}, got ${JSON.stringify(v)}`)
  }
  return v
}

const connect = (args) => {
  const id = need(args, 'client', 'string')
  if (clients.has(id)) throw new Error(`client "${id}" already exists`)
  const url = need(args, 'url', 'string')
  const room = need(args, 'room', 'string')
  checkLoopback(url)
  const doc = new Y.Doc()
  const c = { id, doc, provider: null, closeCodes: [], closeReasons: [], wsconnects: 0, remoteUpdates: 0, lastError: null }
  const onError = (err) => { c.lastError = String(err?.message ?? err) }
  const provider = c.provider = new WebsocketProvider(url, encodeURIComponent(room), doc, {
    WebSocketPolyfill: makeWebSocketClass({ deflate: !!args.deflate, headers: args.headers, onError }),
    // Node 18+ has a global BroadcastChannel: without this, clients in this process would sync
    // with each other directly and hide server bugs.
    disableBc: true,
    maxBackoffTime: args.maxBackoffTime ?? 500,
    params: args.params ?? {},
    connect: args.connect ?? true
  })
  // event is null when the provider closed the socket itself (disconnect(), 30 s watchdog).
  provider.on('connection-close', (event) => {
    c.closeCodes.push(event ? event.code : null)
    c.closeReasons.push(event ? String(event.reason ?? '') : null)
  })
  provider.on('status', ({ status }) => { if (status === 'connected') c.wsconnects++ })
  doc.on('update', (_update, origin) => { if (origin === provider) c.remoteUpdates++ })
  clients.set(id, c)
  return null
}

// Resolve once the provider has processed the close of `ws` (so `synced` is already false
// when the reply arrives and a following waitSynced really waits for the re-sync).
const awaitClosed = (c, ws, timeoutMs = 5000) => new Promise((resolve, reject) => {
  if (c.provider.ws !== ws) return resolve()
  const done = () => { clearTimeout(timer); c.provider.off('connection-close', done); resolve() }
  const timer = setTimeout(() => {
    c.provider.off('connection-close', done)
    reject(new Error(`client "${c.id}": socket did not close within ${timeoutMs} ms`))
  }, timeoutMs)
  c.provider.on('connection-close', done)
})

const terminateSocket = async (c) => {
  const ws = c.provider.ws
  if (ws === null) return false // nothing to drop (not connected / between retries)
  ws.terminate() // destroys the TCP socket: no close frame, the server sees an abrupt EOF
  await awaitClosed(c, ws)
  return true
}

const waitSynced = (c, timeoutMs) => new Promise((resolve, reject) => {
  if (c.provider.synced) return resolve(true)
  const onSync = (state) => { if (state) { clearTimeout(timer); c.provider.off('sync', onSync); resolve(true) } }
  const timer = setTimeout(() => {
    c.provider.off('sync', onSync)
    reject(new Error(`client "${c.id}": not synced after ${timeoutMs} ms ` +
      `(status ${JSON.stringify(status(c))})`))
  }, timeoutMs)
  c.provider.on('sync', onSync)
})

const status = (c) => ({
  connected: c.provider.wsconnected,
  synced: c.provider.synced,
  shouldConnect: c.provider.shouldConnect, // false after disconnect/kill or a 44xx close
  closeCodes: c.closeCodes,
  closeReasons: c.closeReasons,
  wsconnects: c.wsconnects,
  lastError: c.lastError // last socket error, e.g. ECONNREFUSED or an HTTP 403 on upgrade
})

const toB64 = (u8) => Buffer.from(u8).toString('base64')

// Deterministic random edits on the default types; one transaction per edit so every edit is
// sent as its own update message.
const randomEdits = (c, count, seed) => {
  const gen = prng.create(seed)
  const text = c.doc.getText('text')
  const map = c.doc.getMap('map')
  const array = c.doc.getArray('array')
  const edits = [
    () => text.insert(prng.int32(gen, 0, text.length), prng.word(gen, 1, 6)),
    () => {
      if (text.length === 0) return text.insert(0, prng.word(gen, 1, 6))
      const i = prng.int32(gen, 0, text.length - 1)
      text.delete(i, prng.int32(gen, 1, Math.min(3, text.length - i)))
    },
    () => map.set(`k${prng.int32(gen, 0, 9)}`, prng.oneOf(gen, [prng.int32(gen, 0, 1000), prng.word(gen, 0, 5), prng.bool(gen), null, { n: prng.int32(gen, 0, 9) }])),
    () => map.delete(`k${prng.int32(gen, 0, 9)}`),
    () => array.insert(prng.int32(gen, 0, array.length), [prng.int32(gen, 0, 1000)]),
    () => { if (array.length > 0) array.delete(prng.int32(gen, 0, array.length - 1), 1) }
  ]
  for (let n = 0; n < count; n++) c.doc.transact(prng.oneOf(gen, edits))
  return null
}

/** @type {Record<string, (args: any) => any>} command handlers; may return promises */
const commands = {
  connect,
  waitSynced: (a) => waitSynced(getClient(a.client), a.timeoutMs ?? 10000),
  insertText: (a) => { getClient(a.client).doc.getText(need(a, 'name', 'string')).insert(need(a, 'index', 'number'), need(a, 'text', 'string')); return null },
  deleteText: (a) => { getClient(a.client).doc.getText(need(a, 'name', 'string')).delete(need(a, 'index', 'number'), need(a, 'length', 'number')); return null },
  getText: (a) => getClient(a.client).doc.getText(need(a, 'name', 'string')).toString(),
  mapSet: (a) => { getClient(a.client).doc.getMap(need(a, 'name', 'string')).set(need(a, 'key', 'string'), a.value ?? null); return null },
  mapDelete: (a) => { getClient(a.client).doc.getMap(need(a, 'name', 'string')).delete(need(a, 'key', 'string')); return null },
  getMap: (a) => getClient(a.client).doc.getMap(need(a, 'name', 'string')).toJSON(),
  arrayPush: (a) => { getClient(a.client).doc.getArray(need(a, 'name', 'string')).push(need(a, 'values', 'array')); return null },
  arrayInsert: (a) => { getClient(a.client).doc.getArray(need(a, 'name', 'string')).insert(need(a, 'index', 'number'), need(a, 'values', 'array')); return null },
  arrayDelete: (a) => { getClient(a.client).doc.getArray(need(a, 'name', 'string')).delete(need(a, 'index', 'number'), a.length ?? 1); return null },
  getArray: (a) => getClient(a.client).doc.getArray(need(a, 'name', 'string')).toJSON(),
  randomEdits: (a) => randomEdits(getClient(a.client), need(a, 'count', 'number'), need(a, 'seed', 'number')),
  snapshot: (a) => {
    const { doc } = getClient(a.client)
    const texts = a.texts ?? ['text']
    const sv = Y.encodeStateVector(doc)
    return {
      text: Object.fromEntries(texts.map((n) => [n, doc.getText(n).toString()])),
      map: doc.getMap('map').toJSON(),
      array: doc.getArray('array').toJSON(),
      stateVector: toB64(sv),
      stateVectorMap: Object.fromEntries(Y.decodeStateVector(sv)),
      update: toB64(Y.encodeStateAsUpdate(doc))
    }
  },
  setAwareness: (a) => { getClient(a.client).provider.awareness.setLocalState(a.state ?? null); return null },
  setAwarenessField: (a) => { getClient(a.client).provider.awareness.setLocalStateField(need(a, 'field', 'string'), a.value ?? null); return null },
  getAwareness: (a) => Object.fromEntries(getClient(a.client).provider.awareness.getStates()),
  clientId: (a) => getClient(a.client).doc.clientID,
  disconnect: (a) => { getClient(a.client).provider.disconnect(); return null },
  reconnect: (a) => { getClient(a.client).provider.connect(); return null },
  // Abrupt drop; the provider notices the close and reconnects on its own after a backoff.
  dropSocket: (a) => terminateSocket(getClient(a.client)),
  // Abrupt drop without reconnect: shouldConnect=false turns the provider's scheduled
  // reconnect into a no-op (y-websocket checks it in setupWS).
  kill: (a) => { const c = getClient(a.client); c.provider.shouldConnect = false; return terminateSocket(c) },
  destroy: (a) => {
    const c = getClient(a.client)
    clients.delete(c.id)
    c.provider.destroy()
    c.doc.destroy()
    return null
  },
  status: (a) => status(getClient(a.client)),
  applyRemoteUpdateCount: (a) => getClient(a.client).remoteUpdates,
  listClients: () => [...clients.keys()],
  shutdown: () => { setImmediate(shutdown); return null }
}

// --- switchServer ------------------------------------------------------------------------------
// Added for the PostgreSQL durability tests (tests/e2e/test_postgres_durability.py).
// {client, url, room, maxBackoffTime?, params?}: move a client to another server, keeping its Y.Doc,
// as a browser does when the load balancer sends its reconnect to another replica. The old provider
// is destroyed (socket closed, reconnect loop stopped) and a new one is made on the same doc; its
// sync re-sends whatever the new server lacks, edits made while offline included. Status history
// (closeCodes, wsconnects, ...) carries over.
const switchServer = (args) => {
  const c = getClient(args.client)
  const url = need(args, 'url', 'string')
  const room = need(args, 'room', 'string')
  checkLoopback(url)
  const old = c.provider
  // Keep the awareness, as a browser tab does: its clock keeps counting, so other clients accept the
  // state we re-announce (a fresh Awareness would restart at clock 0 and be ignored as stale).
  const awareness = old.awareness
  const localState = awareness.getLocalState()
  old.destroy() // announces our state's removal on the old server (clock + 1)
  awareness.setLocalState(localState)
  const onError = (err) => { c.lastError = String(err?.message ?? err) }
  const provider = c.provider = new WebsocketProvider(url, encodeURIComponent(room), c.doc, {
    WebSocketPolyfill: makeWebSocketClass({ deflate: !!args.deflate, headers: args.headers, onError }),
    awareness,
    disableBc: true,
    maxBackoffTime: args.maxBackoffTime ?? 500,
    params: args.params ?? {}
  })
  provider.on('connection-close', (event) => {
    c.closeCodes.push(event ? event.code : null)
    c.closeReasons.push(event ? String(event.reason ?? '') : null)
  })
  provider.on('status', ({ status }) => { if (status === 'connected') c.wsconnects++ })
  c.doc.on('update', (_update, origin) => { if (origin === provider) c.remoteUpdates++ })
  return null
}
commands.switchServer = switchServer
// --- end switchServer ----------------------------------------------------------------------------

// --- YKeyValue (the tldraw layout) ------------------------------------------------------------------
// Added for the REST document tests (tests/e2e/test_documents_rest.py). A client reads and writes records
// of the Y.Array `name` through y-utility's YKeyValue, as tldraw's Yjs binding does (one YKeyValue per
// array, attached on first use: it cleans up duplicate keys in its own transactions, as in a browser).
//   kvSet {client, name, key, value}   kvDelete {client, name, key}   kvRecords {client, name} -> {key: value}
const keyValue = (c, name) => {
  c.keyValues ??= new Map()
  if (!c.keyValues.has(name)) c.keyValues.set(name, new YKeyValue(c.doc.getArray(name)))
  return c.keyValues.get(name)
}
commands.kvSet = (a) => { keyValue(getClient(a.client), need(a, 'name', 'string')).set(need(a, 'key', 'string'), a.value ?? null); return null }
commands.kvDelete = (a) => { keyValue(getClient(a.client), need(a, 'name', 'string')).delete(need(a, 'key', 'string')); return null }
commands.kvRecords = (a) => {
  const kv = keyValue(getClient(a.client), need(a, 'name', 'string'))
  return Object.fromEntries([...kv.map.entries()].map(([key, entry]) => [key, entry.val]))
}
// --- end YKeyValue -------------------------------------------------------------------------------------

const reply = (msg) => process.stdout.write(JSON.stringify(msg) + '\n')

const destroyAll = () => {
  for (const c of clients.values()) {
    try { c.provider.destroy(); c.doc.destroy() } catch (err) { log('destroy failed:', err) }
  }
  clients.clear()
}

let shuttingDown = false
const shutdown = () => {
  if (shuttingDown) return
  shuttingDown = true
  destroyAll()
  // exit only after stdout (including the shutdown reply) has been flushed
  process.stdout.write('', () => process.exit(0))
}

const handleLine = async (line) => {
  if (line.trim() === '') return
  let msg
  try {
    msg = JSON.parse(line)
  } catch (err) {
    return reply({ id: null, ok: false, error: `invalid JSON: ${err.message}` })
  }
  const { id = null, cmd, ...args } = msg ?? {}
  try {
    if (typeof cmd !== 'string' || !Object.hasOwn(commands, cmd)) {
      return reply({ id, ok: false, error: `unknown command ${JSON.stringify(cmd)}` })
    }
    const result = await commands[cmd](args)
    reply({ id, ok: true, result: result ?? null })
  } catch (err) {
    reply({ id, ok: false, error: `${cmd}: ${err?.message ?? String(err)}` })
  }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', (line) => { handleLine(line) })
rl.on('close', shutdown)
log(`ready (pid ${process.pid})`)
