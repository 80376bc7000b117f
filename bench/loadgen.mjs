// What the Node load generators in bench/ share: their command line, the loopback-only rule, and a
// process's CPU time.
import { readFileSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'

/** The packages of tests/js (yjs, ws, lib0, y-protocols), which scripts/test installs. */
export const requireTestPackage = createRequire(new URL('../tests/js/package.json', import.meta.url))

/** `--name value` pairs (a bare `--flag` is true), and a numeric reader with a default. */
export function parseArgs (argv = process.argv.slice(2)) {
  const args = Object.fromEntries(
    argv.reduce((pairs, arg, i, all) => {
      if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : true])
      return pairs
    }, [])
  )
  const num = (name, fallback) => (args[name] === undefined ? fallback : Number(args[name]))
  return { args, num }
}

/** ``url`` if it is a websocket URL on this machine; otherwise say so and exit (benches never leave it). */
export function loopbackUrl (url) {
  if (!/^wss?:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(String(url || ''))) {
    console.error('--url must be a loopback websocket URL (ws://127.0.0.1:PORT/ws)')
    process.exit(2)
  }
  return String(url)
}

/** CPU seconds process ``pid`` has used (utime + stime from /proc, in ticks of 10 ms), or null if gone. */
export function processCpuSeconds (pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch { return null }
}

/** CPU seconds of process ``pid`` and its children (our CRDT workers), or null without a pid. */
export function treeCpuSeconds (pid) {
  if (pid === null) return null
  let total = processCpuSeconds(pid) ?? 0
  for (const task of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      const stat = readFileSync(`/proc/${task}/stat`, 'utf8').split(') ')[1].split(' ')
      if (Number(stat[1]) === pid) total += processCpuSeconds(task) ?? 0 // its children: our CRDT workers
    } catch {}
  }
  return total
}

/** Per CPU (by number): its idle and total ticks from /proc/stat, to say how busy each core was. */
export function cpuTimes () {
  const out = {}
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line)
    if (m) { const f = m[2].trim().split(/\s+/).map(Number); out[m[1]] = { idle: f[3] + f[4], all: f.reduce((a, b) => a + b, 0) } }
  }
  return out
}
