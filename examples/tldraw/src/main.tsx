// The example app: ask for a room (and a token, when the server requires one), then show the board.
// Everything can come from the URL too: /?room=plan&token=...&server=http://127.0.0.1:8000&name=Ada
import { useMemo, useState, type FormEvent } from 'react'
import { createRoot } from 'react-dom/client'
import { Tldraw, type Editor } from 'tldraw'
import { getAssetUrls } from '@tldraw/assets/selfHosted'
import { ExportMenu } from './ExportMenu'
import { useYjsStore, type Connection } from './useYjsStore'

const assetUrls = getAssetUrls({ baseUrl: '/assets' })
const COLORS = ['#e03131', '#1971c2', '#2f9e44', '#f08c00', '#9c36b5']

declare global {
  interface Window {
    editor?: Editor
  }
}

function Board({ connection }: { connection: Connection }) {
  const store = useYjsStore(connection)
  if (store.status === 'error') return <div className="error">Cannot open this board: {store.error?.message}</div>
  return (
    <div style={{ position: 'fixed', inset: 0 }}>
      <Tldraw store={store} assetUrls={assetUrls} onMount={(editor) => { window.editor = editor }} />
      <ExportMenu room={connection.room} token={connection.token} />
    </div>
  )
}

function App() {
  const params = new URLSearchParams(location.search)
  const [room, setRoom] = useState(params.get('room') ?? '')
  const [token, setToken] = useState(params.get('token') ?? '')
  const [name, setName] = useState(params.get('name') ?? 'Guest')
  const [opened, setOpened] = useState(Boolean(params.get('room')))
  const connection = useMemo<Connection | null>(() => {
    if (!opened || !room) return null
    const id = Math.random().toString(36).slice(2)
    const server = params.get('server') ?? `${location.protocol}//${location.hostname}:8000`
    return { server, room, token, user: { id, name, color: COLORS[id.charCodeAt(0) % COLORS.length] } }
  }, [opened])
  if (connection) return <Board connection={connection} />
  const open = (event: FormEvent) => {
    event.preventDefault()
    if (room) setOpened(true)
  }
  return (
    <form className="prompt" onSubmit={open}>
      <h2>Open a board</h2>
      <input placeholder="room (e.g. team-plan)" value={room} onChange={(e) => setRoom(e.target.value)} autoFocus />
      <input placeholder="token (if the server requires one)" value={token} onChange={(e) => setToken(e.target.value)} />
      <input placeholder="your name" value={name} onChange={(e) => setName(e.target.value)} />
      <button type="submit">Open</button>
    </form>
  )
}

createRoot(document.getElementById('root')!).render(<App />)
