// A minimal websocket client for load generators that must stay cheaper than the server they load: a plain
// TCP socket, the upgrade, masked client frames, unmasked server frames, pongs. No streams, no events per
// message, no extensions (the `ws` library costs several times more per message; session 20 found the
// shared harness's client to be the bottleneck of its own benchmark).
import net from 'node:net'
import crypto from 'node:crypto'

/** A masked client frame (RFC 6455 5.3) of `opcode` (2: binary, 10: pong) holding `payload`. */
export function clientFrame (opcode, payload) {
  const length = payload.length
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10
  const frame = Buffer.alloc(header + 4 + length)
  frame[0] = 0x80 | opcode
  if (header === 2) frame[1] = 0x80 | length
  else if (header === 4) { frame[1] = 0x80 | 126; frame.writeUInt16BE(length, 2) } else { frame[1] = 0x80 | 127; frame.writeBigUInt64BE(BigInt(length), 2) }
  const mask = crypto.randomBytes(4)
  mask.copy(frame, header)
  for (let i = 0; i < length; i++) frame[header + 4 + i] = payload[i] ^ mask[i & 3]
  return frame
}

/**
 * Opens a websocket to 127.0.0.1:`port` at `path`. `onOpen(socket)` runs once the server has answered 101;
 * `onBinary(payload, at)` for every binary message, `at` being when its bytes were read (performance.now()).
 * Returns `{ socket, closed }` (`closed` turns true when the TCP connection ends). Write frames made with
 * `clientFrame` to `socket`.
 */
export function connect ({ port, host = `127.0.0.1:${port}`, path, onOpen, onBinary }) {
  const state = { socket: net.connect(Number(port), '127.0.0.1'), closed: false }
  const { socket } = state
  socket.setNoDelay(true)
  let buffer = null
  let upgraded = false
  socket.on('connect', () => {
    const key = crypto.randomBytes(16).toString('base64')
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
  })
  socket.on('error', () => {})
  socket.on('close', () => { state.closed = true })
  socket.on('data', (chunk) => {
    const at = performance.now()
    buffer = buffer === null ? chunk : Buffer.concat([buffer, chunk])
    if (!upgraded) {
      const end = buffer.indexOf('\r\n\r\n')
      if (end < 0) return
      if (!buffer.subarray(0, 12).toString().includes(' 101')) { socket.destroy(); return }
      upgraded = true
      buffer = buffer.subarray(end + 4)
      onOpen(socket)
    }
    let start = 0
    while (buffer.length - start >= 2) {
      const opcode = buffer[start] & 0x0f
      let length = buffer[start + 1] & 0x7f
      let header = 2
      if (length === 126) {
        if (buffer.length - start < 4) break
        length = buffer.readUInt16BE(start + 2); header = 4
      } else if (length === 127) {
        if (buffer.length - start < 10) break
        length = Number(buffer.readBigUInt64BE(start + 2)); header = 10
      }
      if (buffer.length - start < header + length) break
      const payload = buffer.subarray(start + header, start + header + length)
      start += header + length
      if (opcode === 2) onBinary(payload, at)
      else if (opcode === 9) socket.write(clientFrame(10, payload))
      else if (opcode === 8) { socket.end(); break }
    }
    buffer = start === buffer.length ? null : buffer.subarray(start)
  })
  return state
}
