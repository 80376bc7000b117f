// Many rooms at once, and how evenly a server serves them: the delivery latency of every edit, and each
// room's own p99, so that a room left behind shows even when the overall p99 looks fine.
//
//   node bench/rooms_spread.mjs --url ws://127.0.0.1:8000/ws [--rooms 1000] [--per-room 4] [--edits 20]
//        [--spread-ms 10000] [--server-pid PID] [--json]
//
// Every client is a y-websocket-protocol client (a raw socket, bench/rawws.mjs) writing to its room's
// Y.Text: it syncs, then sends --edits appends spread at random over --spread-ms, so the rooms together offer
// rooms × per-room × edits / spread edits per second (the 1,000 rooms × 4 writers at 2 edits/s:
// 8,000 edits/s). The client is built to cost far less than the server it measures (session 21: the
// earlier one, with a Y.Doc and a `ws` socket per client and a timer per client, stalled its own event loop
// for 50 ms at p99 and up to 190 ms, which every server's latency then carried): each client's edits are
// made by a Y.Doc before the run and sent as ready frames by one timer; what arrives is not applied but its
// clock range read (Y.parseUpdateMeta), which says which edits arrived and when. Latency: from the moment
// an edit is written to its socket to a peer's read of it, for every (edit, other peer of the room).
//
// Reported: connect time; deliveries and the fraction expected that arrived; latency p50/p95/p99/max over
// all deliveries; each room's p99, summarised across rooms (min, median, p90, max; max / median is the
// spread); rooms with a delivery missing; CPU over the edits: the server's with its children (--server-pid),
// the client's, and how busy each core was.
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { clientFrame, connect } from './rawws.mjs'
import { cpuTimes, loopbackUrl, parseArgs, requireTestPackage as require, treeCpuSeconds } from './loadgen.mjs'

const Y = require('yjs')
const encoding = require('lib0/encoding')
const decoding = require('lib0/decoding')
const sync = require('y-protocols/sync')

const { args, num } = parseArgs()
const URL_ = new URL(loopbackUrl(args.url))
const ROOMS = num('rooms', 1000)
const PER_ROOM = num('per-room', 4)
const EDITS = num('edits', 20)
const SPREAD_MS = num('spread-ms', 10000)
const SERVER_PID = args['server-pid'] ? Number(args['server-pid']) : null
const RUN = Math.random().toString(36).slice(2, 8)

const now = () => performance.now()
const syncMessage = (step, payload) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, 0)
  encoding.writeVarUint(encoder, step)
  encoding.writeVarUint8Array(encoder, payload)
  return encoding.toUint8Array(encoder)
}
const STEP1 = clientFrame(2, syncMessage(0, new Uint8Array([0]))) // an empty state vector
const EMPTY_STEP2 = clientFrame(2, syncMessage(1, Y.encodeStateAsUpdate(new Y.Doc())))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Per client (index c): its room, its Yjs client id, and per edit the clock it started at and when it was sent.
const CLIENTS = ROOMS * PER_ROOM
const roomOf = new Int32Array(CLIENTS)
const indexOfYjsClient = new Map()
const clockAt = new Float64Array(CLIENTS * EDITS).fill(NaN)
const sentAt = new Float64Array(CLIENTS * EDITS).fill(NaN)
const received = new Uint8Array(CLIENTS * EDITS * PER_ROOM) // (sender edit, receiver's slot in the room)
const latencies = [] // all deliveries, ms
const perRoom = Array.from({ length: ROOMS }, () => [])

function deliver (receiver, update, at) {
  const { from, to } = Y.parseUpdateMeta(update)
  for (const [yjsClient, end] of to) {
    const sender = indexOfYjsClient.get(yjsClient)
    if (sender === undefined || sender === receiver) continue
    const start = from.get(yjsClient) ?? 0
    for (let e = 0; e < EDITS; e++) {
      const key = sender * EDITS + e
      const clock = clockAt[key]
      if (!(clock >= start && clock < end)) continue
      const slot = key * PER_ROOM + (receiver % PER_ROOM)
      if (received[slot]) continue
      received[slot] = 1
      const latency = at - sentAt[key]
      latencies.push(latency)
      perRoom[roomOf[receiver]].push(latency)
    }
  }
}

// A client: its clock and frame per edit, made before the run (the client does not apply what it receives,
// so its document holds only its own appends: the same bytes a live Y.Doc would send), and a raw socket.
function client (index, room) {
  const doc = new Y.Doc()
  roomOf[index] = room
  indexOfYjsClient.set(doc.clientID, index)
  const frames = []
  doc.on('update', (update) => frames.push(clientFrame(2, syncMessage(2, update))))
  const text = doc.getText('t')
  for (let e = 0; e < EDITS; e++) {
    clockAt[index * EDITS + e] = Y.getState(doc.store, doc.clientID)
    text.insert(text.length, `${index}:${e},`)
  }
  doc.destroy()
  let resolveSynced
  const synced = new Promise((resolve) => { resolveSynced = resolve })
  const { socket } = connect({
    port: URL_.port,
    host: URL_.host,
    path: `${URL_.pathname.replace(/\/$/, '')}/bench-${RUN}-${room}`,
    onOpen: (socket) => socket.write(STEP1),
    onBinary (data, at) {
      const decoder = decoding.createDecoder(data)
      if (decoding.readVarUint(decoder) !== 0) return // awareness and the rest: not measured
      const kind = decoding.readVarUint(decoder)
      if (kind === sync.messageYjsSyncStep1) socket.write(EMPTY_STEP2) // the server gets the edits as updates
      else if (kind === sync.messageYjsSyncStep2) resolveSynced()
      else if (kind === sync.messageYjsUpdate) deliver(index, decoding.readVarUint8Array(decoder), at)
    }
  })
  return { socket, synced, index, frames }
}

async function connectRoom (room) {
  const members = []
  for (let i = 0; i < PER_ROOM; i++) members.push(client(room * PER_ROOM + i, room))
  await Promise.race([Promise.all(members.map((m) => m.synced)), sleep(60000)])
  return members
}

function percentile (sorted, q) {
  if (!sorted.length) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
}

const connectStart = now()
const members = []
for (let start = 0; start < ROOMS; start += 50) { // 50 rooms connecting at a time
  const rooms = []
  for (let room = start; room < Math.min(start + 50, ROOMS); room++) rooms.push(connectRoom(room))
  for (const group of await Promise.all(rooms)) members.push(...group)
}
const connectMs = now() - connectStart
await sleep(500)

const cpuSample = () => {
  const usage = process.cpuUsage()
  return { server: treeCpuSeconds(SERVER_PID), client: (usage.user + usage.system) / 1e6, cpus: cpuTimes() }
}
// The client's own event-loop delay while the edits run: a delivery it reads late is counted as latency.
// One schedule for all the edits: each client's e-th edit at a random moment of the e-th of EDITS equal
// slots of --spread-ms, sent by one timer that wakes every millisecond (not a timer per client). Made
// before the clock starts: sorting 80,000 entries takes tens of milliseconds, and edits due meanwhile
// would all go out at once, a burst the server would still be working through half a second later.
const interval = SPREAD_MS / EDITS
const schedule = []
for (const member of members) {
  for (let e = 0; e < EDITS; e++) schedule.push({ at: (e + Math.random()) * interval, member, e })
}
schedule.sort((a, b) => a.at - b.at)
const clientLoopDelay = monitorEventLoopDelay({ resolution: 1 })
clientLoopDelay.enable()
const before = cpuSample()
const editsStart = now()
for (let next = 0; next < schedule.length;) {
  const elapsed = now() - editsStart
  for (; next < schedule.length && schedule[next].at <= elapsed; next++) {
    const { member, e } = schedule[next]
    sentAt[member.index * EDITS + e] = now()
    member.socket.write(member.frames[e])
  }
  await sleep(1)
}
const expected = CLIENTS * EDITS * (PER_ROOM - 1)
const deadline = now() + 30000
while (latencies.length < expected && now() < deadline) await sleep(50)
const editsSeconds = (now() - editsStart) / 1000
const after = cpuSample()
clientLoopDelay.disable()
for (const member of members) member.socket.destroy()

latencies.sort((a, b) => a - b)
const roomP99 = perRoom.map((list) => percentile(list.sort((a, b) => a - b), 0.99)).filter(Number.isFinite).sort((a, b) => a - b)
const perRoomExpected = PER_ROOM * EDITS * (PER_ROOM - 1)
const round = (x) => Math.round(x * 10) / 10
const busy = (cpu) => {
  const [a, b] = [before.cpus[cpu], after.cpus[cpu]]
  return a && b ? round(100 * (1 - (b.idle - a.idle) / (b.all - a.all))) : null
}
const result = {
  rooms: ROOMS,
  per_room: PER_ROOM,
  offered_edits_per_s: round(CLIENTS * EDITS / (SPREAD_MS / 1000)),
  connect_all_ms: Math.round(connectMs),
  delivered_fraction: Math.round(latencies.length / expected * 10000) / 10000,
  rooms_missing_a_delivery: perRoom.filter((list) => list.length < perRoomExpected).length,
  latency_p50_ms: round(percentile(latencies, 0.5)),
  latency_p95_ms: round(percentile(latencies, 0.95)),
  latency_p99_ms: round(percentile(latencies, 0.99)),
  latency_max_ms: round(latencies[latencies.length - 1] ?? NaN),
  room_p99_min_ms: round(roomP99[0]),
  room_p99_median_ms: round(percentile(roomP99, 0.5)),
  room_p99_p90_ms: round(percentile(roomP99, 0.9)),
  room_p99_max_ms: round(roomP99[roomP99.length - 1]),
  room_p99_spread: round(roomP99[roomP99.length - 1] / percentile(roomP99, 0.5)),
  // The server with its children (our CRDT workers), the client, and each core (all processes): a latency
  // measured while the client's core is saturated is the client's, not the server's.
  server_cpu_pct: before.server !== null ? round(100 * (after.server - before.server) / editsSeconds) : null,
  client_loop_delay_p99_ms: round(clientLoopDelay.percentile(99) / 1e6),
  client_loop_delay_max_ms: round(clientLoopDelay.max / 1e6),
  client_cpu_pct: round(100 * (after.client - before.client) / editsSeconds),
  cpu0_busy_pct: busy('0'),
  cpu1_busy_pct: busy('1')
}
if (args.json) console.log(JSON.stringify(result))
else for (const [key, value] of Object.entries(result)) console.log(`${key} ${value}`)
process.exit(0)
