// Many rooms at once, and how evenly a server serves them: the delivery latency of every edit, and each
// room's own p99, so that a room left behind shows even when the overall p99 looks fine.
//
//   node bench/rooms_spread.mjs --url ws://127.0.0.1:8000/ws [--rooms 1000] [--per-room 4] [--edits 20]
//        [--spread-ms 10000] [--server-pid PID] [--json]
//
// Every client is a y-websocket-protocol client with a Yjs document of its own (the yjs, y-protocols and
// ws of tests/js). It syncs, then makes --edits appends to the room's Y.Text, spread at random over
// --spread-ms, so the rooms together offer rooms × per-room × edits / spread edits per second (the issue's
// 1,000 rooms × 4 writers at 2 edits/s: 8,000 edits/s). It does not apply what it receives: it reads the
// clock range of each update (Y.parseUpdateMeta) and so knows which edits arrived, and when, without
// the cost of integrating them (one process drives all the clients). Latency: from the sender's append
// to a peer's receipt of it, for every (edit, other peer of the room).
//
// Reported: connect time; deliveries and the fraction expected that arrived; latency p50/p95/p99/max over
// all deliveries; each room's p99, summarised across rooms (min, median, p90, max; max / median is the
// spread); rooms with a delivery missing; the server's CPU over the edits when --server-pid is given.
import { loopbackUrl, parseArgs, processCpuSeconds as cpuSeconds, requireTestPackage as require } from './loadgen.mjs'

const Y = require('yjs')
const WebSocket = require('ws')
const encoding = require('lib0/encoding')
const decoding = require('lib0/decoding')
const sync = require('y-protocols/sync')

const { args, num } = parseArgs()
const URL_ = loopbackUrl(args.url)
const ROOMS = num('rooms', 1000)
const PER_ROOM = num('per-room', 4)
const EDITS = num('edits', 20)
const SPREAD_MS = num('spread-ms', 10000)
const SERVER_PID = args['server-pid'] ? Number(args['server-pid']) : null
const RUN = Math.random().toString(36).slice(2, 8)

const now = () => performance.now()
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

function client (index, room) {
  const doc = new Y.Doc()
  roomOf[index] = room
  indexOfYjsClient.set(doc.clientID, index)
  const socket = new WebSocket(`${URL_.replace(/\/$/, '')}/bench-${RUN}-${room}`)
  socket.binaryType = 'arraybuffer'
  let resolveSynced
  const synced = new Promise((resolve) => { resolveSynced = resolve })
  const send = (write) => {
    if (socket.readyState !== WebSocket.OPEN) return
    const encoder = encoding.createEncoder()
    write(encoder)
    socket.send(encoding.toUint8Array(encoder))
  }
  doc.on('update', (update) => send((encoder) => { encoding.writeVarUint(encoder, 0); sync.writeUpdate(encoder, update) }))
  socket.on('open', () => send((encoder) => { encoding.writeVarUint(encoder, 0); sync.writeSyncStep1(encoder, doc) }))
  socket.on('message', (data) => {
    const at = now()
    const decoder = decoding.createDecoder(new Uint8Array(data))
    if (decoding.readVarUint(decoder) !== 0) return // awareness and the rest: not measured
    const kind = decoding.readVarUint(decoder)
    if (kind === sync.messageYjsSyncStep1) {
      const stateVector = decoding.readVarUint8Array(decoder)
      send((encoder) => { encoding.writeVarUint(encoder, 0); sync.writeSyncStep2(encoder, doc, stateVector) })
    } else if (kind === sync.messageYjsSyncStep2) {
      decoding.readVarUint8Array(decoder)
      resolveSynced()
    } else if (kind === sync.messageYjsUpdate) {
      deliver(index, decoding.readVarUint8Array(decoder), at)
    }
  })
  socket.on('error', () => {})
  return { doc, socket, synced, index }
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

const cpuBefore = SERVER_PID ? cpuSeconds(SERVER_PID) : null
const editsStart = now()
const interval = SPREAD_MS / EDITS
await Promise.all(members.map(async (member) => {
  const text = member.doc.getText('t')
  await sleep(Math.random() * interval)
  for (let e = 0; e < EDITS; e++) {
    const wait = editsStart + e * interval + Math.random() * interval * 0.5 - now()
    if (wait > 1) await sleep(wait)
    const key = member.index * EDITS + e
    clockAt[key] = Y.getState(member.doc.store, member.doc.clientID)
    sentAt[key] = now()
    text.insert(text.length, `${member.index}:${e},`)
  }
}))
const expected = CLIENTS * EDITS * (PER_ROOM - 1)
const deadline = now() + 30000
while (latencies.length < expected && now() < deadline) await sleep(50)
const editsSeconds = (now() - editsStart) / 1000
const cpuAfter = SERVER_PID ? cpuSeconds(SERVER_PID) : null
for (const member of members) member.socket.terminate()

latencies.sort((a, b) => a - b)
const roomP99 = perRoom.map((list) => percentile(list.sort((a, b) => a - b), 0.99)).filter(Number.isFinite).sort((a, b) => a - b)
const perRoomExpected = PER_ROOM * EDITS * (PER_ROOM - 1)
const round = (x) => Math.round(x * 10) / 10
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
  server_cpu_pct: cpuBefore !== null && cpuAfter !== null ? round(100 * (cpuAfter - cpuBefore) / editsSeconds) : null
}
if (args.json) console.log(JSON.stringify(result))
else for (const [key, value] of Object.entries(result)) console.log(`${key} ${value}`)
process.exit(0)
