// One hot room (the conference: 1 writer → 1,000 readers) with a load client cheap enough that the server,
// not the client, is what saturates. The shared harness's fan-out client (`bench.mjs --scenario fanout
// --readers 1000`) ran at 90-100 % of its core in every earlier run, with the servers at 52-76 %: by the
// issue's rule those are not throughput figures. This client speaks the same protocol with less work per
// message:
//
// - readers are plain TCP sockets with a minimal websocket client (the upgrade, unmasked server frames,
//   pongs), not the `ws` library with its streams and events per message;
// - a broadcast reaches every reader with the same bytes, so each distinct message's clock range is read
//   once (Y.parseUpdateMeta) and every other reader finds it in a cache: keyed by (length, first clock),
//   confirmed byte for byte (Buffer.equals, a memcmp);
// - the writer's window (at most --window updates not yet delivered to every reader) is kept by a counter
//   per update, not by scanning the readers before each send.
//
// Otherwise it is the harness's scenario: readers sync and announce an (empty) awareness state; the writer
// (a Y.Doc on a `ws` socket) appends one token per update to a Y.Text; --reps repetitions of --updates
// inserts; throughput = updates delivered to every reader per second, the median of the repetitions.
// Works against y-websocket-protocol servers and Hocuspocus (--kind hocuspocus).
//
// The window decides what is measured. With the harness's 300 updates in flight, throughput is 300 divided
// by the time until the last reader has an update: a latency figure (the servers sat at 75-80 % of their
// core). With 2,000 the writer keeps the server supplied and throughput is closer to its capacity. The
// first and last repetitions of a run came out slower for every server (docs/benchmarks.md, session 20):
// quote medians over several repetitions and rounds.
//
//   node bench/hot_room.mjs --url ws://127.0.0.1:PORT/ws [--kind ywebsocket|hocuspocus] [--readers 1000]
//        [--updates 3000] [--reps 3] [--window 300] [--paced-rate 0] [--paced-seconds 10]
//        [--server-pid PID] [--json out.json]
//
// --paced-rate R: then R updates a second for --paced-seconds, whatever is delivered (an open loop). At a
// rate every server keeps up with, the server's CPU per update is the steadiest figure of what a broadcast
// to every reader costs it (saturated throughput swings with how the servers merge).
//
// --server-pid: the server's CPU is that process and its children (our CRDT workers), read from /proc.
// Also reported: how busy CPU 0 and CPU 1 were while saturated (all processes), since the bench pins the
// server to CPU 0 and this client to CPU 1 (bench/hot_room.sh). All CPU figures of the saturated phase are
// over the repetitions' active time (first send to last delivery), not the pauses between them; /proc counts
// in 10 ms ticks, so give repetitions of a second or more (--updates 10000).
import { writeFileSync } from 'node:fs'
import { clientFrame, connect } from './rawws.mjs'
import { cpuTimes, loopbackUrl, parseArgs, requireTestPackage as require, treeCpuSeconds as treeCpu } from './loadgen.mjs'

const Y = require('yjs')
const WebSocket = require('ws')
const encoding = require('lib0/encoding')
const decoding = require('lib0/decoding')
const awarenessProtocol = require('y-protocols/awareness')

const { args, num } = parseArgs()
const URL_ = new URL(loopbackUrl(args.url))
if (URL_.protocol !== 'ws:') {
  console.error('--url must be a ws:// URL: this client speaks no TLS')
  process.exit(2)
}
const KIND = args.kind === 'hocuspocus' ? 'hocuspocus' : 'ywebsocket'
const READERS = num('readers', 1000)
const UPDATES = num('updates', 3000)
const REPS = num('reps', 3)
const WINDOW = num('window', 300)
const SERVER_PID = args['server-pid'] ? Number(args['server-pid']) : null
const ROOM = 'hot-' + Math.random().toString(36).slice(2, 8)
const PACED_RATE = num('paced-rate', 0)
const PACED = Math.round(PACED_RATE * num('paced-seconds', 10))
const SATURATED = UPDATES * REPS
const TOTAL = SATURATED + PACED
// y-websocket servers take the room from the path; Hocuspocus from each message (its URL has no room).
const PATH = KIND === 'hocuspocus' ? URL_.pathname : URL_.pathname.replace(/\/$/, '') + '/' + ROOM

const now = () => performance.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// -- framing: y-websocket's [type][payload], Hocuspocus's [document name][type][payload] ----------------

function message (build) {
  const e = encoding.createEncoder()
  if (KIND === 'hocuspocus') encoding.writeVarString(e, ROOM)
  build(e)
  return encoding.toUint8Array(e)
}
const syncMessage = (step, payload) => message((e) => {
  encoding.writeVarUint(e, 0)
  encoding.writeVarUint(e, step)
  encoding.writeVarUint8Array(e, payload)
})
// Hocuspocus wants an Auth(Token) message before anything else.
const HELLO = KIND === 'hocuspocus'
  ? message((e) => { encoding.writeVarUint(e, 2); encoding.writeVarUint(e, 0); encoding.writeVarString(e, ''); encoding.writeVarString(e, '4.7.0') })
  : null
const EMPTY_UPDATE = Y.encodeStateAsUpdate(new Y.Doc())

function awarenessMessage () {
  const doc = new Y.Doc()
  const awareness = new awarenessProtocol.Awareness(doc)
  const update = awarenessProtocol.encodeAwarenessUpdate(awareness, [doc.clientID])
  awareness.destroy()
  return message((e) => { encoding.writeVarUint(e, 1); encoding.writeVarUint8Array(e, update) })
}

// -- what was sent, and what every reader received -------------------------------------------------------

const clockStart = new Float64Array(TOTAL + 1).fill(Infinity) // the writer's clock at which update i starts
const sentAt = new Float64Array(TOTAL).fill(NaN)
const readersHaving = new Int32Array(TOTAL) // how many readers received update i
const lastArrival = new Float64Array(TOTAL) // when the last of them did
const latencies = new Float32Array(TOTAL * READERS) // every reader delivery, ms
let deliveries = 0
let deliveredToAll = 0 // updates [0, deliveredToAll) reached every reader
let writerId = -1
let wake = null

/** Per distinct message: the writer's [from, to) clock range in it (or null). Broadcasts repeat. */
const ranges = new Map()
let parses = 0

function rangeOf (payload) {
  const key = payload.length + ':' + firstClock(payload)
  let entries = ranges.get(key)
  if (entries !== undefined) {
    for (const entry of entries) if (entry.bytes.equals(payload)) return entry.range
  } else {
    entries = []
    ranges.set(key, entries)
  }
  parses++
  const meta = Y.parseUpdateMeta(payload)
  const to = meta.to.get(writerId)
  const range = to === undefined ? null : [meta.from.get(writerId), to]
  entries.push({ bytes: Buffer.from(payload), range })
  return range
}

/** The clock of the first struct of the update's first client (a cheap key), or -1. */
function firstClock (payload) {
  try {
    const d = decoding.createDecoder(payload)
    if (decoding.readVarUint(d) === 0) return -1
    decoding.readVarUint(d) // structs
    decoding.readVarUint(d) // client
    return decoding.readVarUint(d)
  } catch {
    return -1
  }
}

function lowerBound (clock) {
  let lo = 0; let hi = TOTAL
  while (lo < hi) { const mid = (lo + hi) >> 1; if (clockStart[mid] < clock) lo = mid + 1; else hi = mid }
  return lo
}

function received (reader, payload, at) {
  if (writerId < 0) return
  const range = rangeOf(payload)
  if (range === null) return
  const [from, to] = range
  let i = Math.max(reader.next, lowerBound(from))
  for (; i < TOTAL && clockStart[i] < to; i++) {
    latencies[deliveries++] = at - sentAt[i]
    if (++readersHaving[i] === READERS) lastArrival[i] = at
    else if (at > lastArrival[i]) lastArrival[i] = at
  }
  if (i > reader.next) reader.next = i
  while (deliveredToAll < TOTAL && readersHaving[deliveredToAll] === READERS) deliveredToAll++
  if (wake) { const w = wake; wake = null; w() }
}

// -- a reader: TCP socket, websocket upgrade, unmasked server frames ---------------------------------------

function reader () {
  const state = { next: 0, synced: false }
  let resolveSynced
  state.syncedPromise = new Promise((resolve) => { resolveSynced = resolve })
  const connection = connect({
    port: URL_.port,
    host: URL_.host,
    path: PATH,
    onOpen (socket) {
      if (HELLO) socket.write(clientFrame(2, HELLO))
      socket.write(clientFrame(2, syncMessage(0, new Uint8Array([0]))))
      socket.write(clientFrame(2, AWARENESS))
    },
    onBinary: (payload, at) => handle(state, payload, at)
  })
  const socket = connection.socket
  state.socket = socket
  function handle (state, data, at) {
    if (KIND === 'hocuspocus' && data.length === 1 && data[0] === 9) { socket.write(clientFrame(2, Buffer.from([10]))); return }
    const d = decoding.createDecoder(data)
    if (KIND === 'hocuspocus') decoding.readVarString(d)
    if (decoding.readVarUint(d) !== 0) return // not a sync message
    const step = decoding.readVarUint(d)
    if (step === 0) { socket.write(clientFrame(2, syncMessage(1, EMPTY_UPDATE))); return }
    const payload = decoding.readVarUint8Array(d)
    if (payload.length > 2) received(state, payload, at)
    if (step === 1 && !state.synced) { state.synced = true; resolveSynced() }
  }
  return state
}
const AWARENESS = awarenessMessage()

// -- CPU accounting ------------------------------------------------------------------------------------------

function sample () {
  const usage = process.cpuUsage()
  return { t: now(), server: treeCpu(SERVER_PID), client: (usage.user + usage.system) / 1e6, cpus: cpuTimes() }
}

// -- the run ---------------------------------------------------------------------------------------------------

async function main () {
  const t0 = now()
  const readers = []
  for (let i = 0; i < READERS; i += 50) {
    const batch = []
    for (let j = i; j < Math.min(READERS, i + 50); j++) batch.push(reader())
    await Promise.all(batch.map((r) => Promise.race([r.syncedPromise, sleep(30000)])))
    readers.push(...batch)
  }
  const synced = readers.filter((r) => r.synced).length
  if (synced < READERS) throw new Error(`${READERS - synced} readers did not sync within 30 s`)
  const connectMs = now() - t0

  const doc = new Y.Doc()
  writerId = doc.clientID
  const text = doc.getText('f')
  const writer = new WebSocket(`ws://${URL_.host}${PATH}`, { perMessageDeflate: false })
  let open = false
  writer.on('message', (data) => {
    const d = decoding.createDecoder(new Uint8Array(data))
    if (KIND === 'hocuspocus') decoding.readVarString(d)
    if (decoding.readVarUint(d) === 0 && decoding.readVarUint(d) === 0) writer.send(syncMessage(1, Y.encodeStateAsUpdate(doc)))
  })
  doc.on('update', (update) => { if (open) writer.send(syncMessage(2, update)) })
  await new Promise((resolve, reject) => { writer.on('open', resolve); writer.on('error', reject) })
  if (HELLO) writer.send(HELLO)
  writer.send(syncMessage(0, Y.encodeStateVector(doc)))
  open = true
  await sleep(500)

  const send = (i) => {
    clockStart[i] = Y.getState(doc.store, writerId)
    sentAt[i] = now()
    text.insert(text.length, i + ',')
  }
  // CPU is counted over the repetitions' active time only, from the first send to the last delivery: the
  // pauses between them (and the drain of a window) would otherwise count as idle server time.
  const active = { t: 0, server: 0, client: 0, cpus: {} }
  const addActive = (a, b) => {
    active.t += b.t - a.t
    active.server += (b.server ?? 0) - (a.server ?? 0)
    active.client += b.client - a.client
    for (const cpu of Object.keys(b.cpus)) {
      const sum = (active.cpus[cpu] ??= { idle: 0, all: 0 })
      sum.idle += b.cpus[cpu].idle - a.cpus[cpu].idle
      sum.all += b.cpus[cpu].all - a.cpus[cpu].all
    }
  }
  const throughputs = []
  const repCpu = [] // per repetition: server % / client %
  for (let rep = 0; rep < REPS; rep++) {
    const base = rep * UPDATES; const end = base + UPDATES
    const repStart = sample()
    let i = base
    const deadline = now() + 120000
    while (deliveredToAll < end && now() < deadline) {
      let burst = 0
      while (i < end && i - deliveredToAll < WINDOW && writer.bufferedAmount < (1 << 20) && burst < 32) { send(i++); burst++ }
      if (burst === 32) { await new Promise((resolve) => setImmediate(resolve)); continue }
      await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 20) })
    }
    if (deliveredToAll < end) throw new Error(`rep ${rep}: ${end - deliveredToAll} updates not delivered to every reader in 120 s`)
    let last = 0
    for (let k = base; k < end; k++) if (lastArrival[k] > last) last = lastArrival[k]
    throughputs.push(UPDATES / ((last - sentAt[base]) / 1000))
    const repEnd = sample()
    addActive(repStart, repEnd)
    const repWall = (repEnd.t - repStart.t) / 1000
    repCpu.push(`${round((100 * ((repEnd.server ?? 0) - (repStart.server ?? 0))) / repWall)}/${round((100 * (repEnd.client - repStart.client)) / repWall)}`)
    await sleep(200)
  }
  const saturatedDeliveries = deliveries
  let paced = null
  if (PACED > 0) {
    const p0 = sample()
    const started = now()
    for (let k = 0; k < PACED; k++) {
      const wait = started + (k * 1000) / PACED_RATE - now()
      if (wait > 1) await sleep(wait)
      send(SATURATED + k)
    }
    const deadline = now() + 30000
    while (deliveredToAll < TOTAL && now() < deadline) await sleep(20)
    const p1 = sample()
    const pacedWall = (p1.t - p0.t) / 1000
    const pacedSorted = latencies.subarray(saturatedDeliveries, deliveries).slice().sort()
    const at = (p) => round(pacedSorted[Math.min(pacedSorted.length - 1, Math.ceil((p / 100) * pacedSorted.length) - 1)])
    paced = {
      paced_rate: PACED_RATE,
      paced_delivered_fraction: round(pacedSorted.length / (PACED * READERS), 4),
      paced_latency_p50_ms: at(50),
      paced_latency_p99_ms: at(99),
      paced_server_cpu_pct: p0.server === null ? null : round((100 * (p1.server - p0.server)) / pacedWall),
      paced_server_cpu_ms_per_update: p0.server === null ? null : round((1000 * (p1.server - p0.server)) / PACED, 3),
      paced_client_cpu_pct: round((100 * (p1.client - p0.client)) / pacedWall)
    }
  }
  const wall = active.t / 1000
  const busy = (cpu) => { const c = active.cpus[cpu]; return c && c.all ? round(100 * (1 - c.idle / c.all)) : null }
  const sorted = latencies.subarray(0, saturatedDeliveries).slice().sort()
  const pct = (p) => round(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)])
  const full = []
  for (let k = 0; k < SATURATED; k++) full.push(lastArrival[k] - sentAt[k])
  full.sort((a, b) => a - b)
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
  const result = {
    kind: KIND,
    readers: READERS,
    updates: UPDATES,
    reps: REPS,
    window: WINDOW,
    connect_all_ms: round(connectMs),
    throughput_updates_per_s: round(median(throughputs)),
    throughput_reps: throughputs.map(round),
    rep_server_client_cpu_pct: repCpu,
    reader_deliveries_per_s: round(median(throughputs) * READERS),
    delivered_fraction: round(saturatedDeliveries / (SATURATED * READERS), 4),
    latency_p50_ms: pct(50),
    latency_p99_ms: pct(99),
    full_latency_p99_ms: round(full[Math.min(full.length - 1, Math.ceil(0.99 * full.length) - 1)]),
    server_cpu_pct: SERVER_PID === null ? null : round((100 * active.server) / wall),
    client_cpu_pct: round((100 * active.client) / wall),
    cpu0_busy_pct: busy('0'),
    cpu1_busy_pct: busy('1'),
    // How many updates one broadcast carried on average: servers merge what arrives while they are busy.
    distinct_messages: parses,
    updates_per_message: round(TOTAL / Math.max(1, parses)),
    ...paced
  }
  for (const [key, value] of Object.entries(result)) console.log(`${key} ${Array.isArray(value) ? value.join(' / ') : value}`)
  if (args.json && args.json !== true) writeFileSync(String(args.json), JSON.stringify(result, null, 2))
  writer.terminate()
  for (const r of readers) r.socket.destroy()
  setTimeout(() => process.exit(0), 100)
}

function round (x, digits = 1) { return Math.round(x * 10 ** digits) / 10 ** digits }

main().catch((error) => { console.error('hot_room failed:', error.message); process.exit(1) })
