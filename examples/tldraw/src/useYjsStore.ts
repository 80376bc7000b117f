// Bind a tldraw store to a collab-server room in the tldraw-yjs-example layout:
//   tl_<room>  Y.Array of {key, val} entries used as a key/value map by y-utility's YKeyValue
//   meta       Y.Map holding the tldraw schema the records were written with (key "schema")
// Local document changes go to Yjs; remote Yjs changes come into the store; cursors travel as awareness.
import { useEffect, useState } from 'react'
import {
  DocumentRecordType,
  InstancePresenceRecordType,
  PageRecordType,
  computed,
  createPresenceStateDerivation,
  createTLStore,
  react,
  type SerializedSchema,
  type TLDocument,
  type TLInstancePresence,
  type TLPageId,
  type TLRecord,
  type TLStoreWithStatus,
  type TLUser,
} from 'tldraw'
import { YKeyValue } from 'y-utility/y-keyvalue'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { loadBoardInto, newerSchemaProblem } from '../../../exports/renderer/web/src/board'

export interface Connection {
  server: string // http(s)://host:port of the collab server
  room: string
  token: string
  user: { id: string; name: string; color: string }
}

export function useYjsStore(connection: Connection): TLStoreWithStatus {
  const [status, setStatus] = useState<TLStoreWithStatus>({ status: 'loading' })

  useEffect(() => {
    const { server, room, token, user } = connection
    const store = createTLStore()
    const doc = new Y.Doc({ gc: true })
    const entries = new YKeyValue<TLRecord>(doc.getArray<{ key: string; val: TLRecord }>(`tl_${room}`))
    const meta = doc.getMap<SerializedSchema>('meta')
    const wsUrl = server.replace(/^http/, 'ws') + '/ws'
    const provider = new WebsocketProvider(wsUrl, encodeURIComponent(room), doc, { params: token ? { token } : {} })
    const cleanups: (() => void)[] = []

    const onFirstSync = (synced: boolean) => {
      if (!synced) return
      provider.off('sync', onFirstSync)
      const ours = store.schema.serialize()
      if (entries.yarray.length === 0) {
        // a new board: write the records tldraw needs (a document and a page) and our schema
        store.put([
          DocumentRecordType.create({ id: 'document:document' as TLDocument['id'] }),
          PageRecordType.create({ id: 'page:page' as TLPageId, name: 'Page 1', index: 'a1' as never }),
        ])
        doc.transact(() => {
          for (const record of store.allRecords()) entries.set(record.id, record)
          meta.set('schema', ours)
        })
      } else {
        const board = { records: [...entries.map.values()].map((entry) => entry.val), schema: meta.get('schema') ?? null }
        const problem = newerSchemaProblem(ours, board.schema)
        if (problem) {
          setStatus({ status: 'error', error: new Error(problem) })
          return
        }
        loadBoardInto(store, board)
      }

      cleanups.push(
        store.listen(
          ({ changes }) => {
            doc.transact(() => {
              for (const record of Object.values(changes.added)) entries.set(record.id, record)
              for (const [, record] of Object.values(changes.updated)) entries.set(record.id, record)
              for (const record of Object.values(changes.removed)) entries.delete(record.id)
            })
          },
          { source: 'user', scope: 'document' },
        ),
      )
      const onRemote = (changes: Map<string, { action: 'add' | 'update' | 'delete'; newValue?: TLRecord }>, tr: Y.Transaction) => {
        if (tr.local) return
        const put: TLRecord[] = []
        const remove: TLRecord['id'][] = []
        changes.forEach((change, id) => {
          if (change.action === 'delete') remove.push(id as TLRecord['id'])
          else if (change.newValue) put.push(change.newValue)
        })
        store.mergeRemoteChanges(() => {
          if (remove.length) store.remove(remove)
          if (put.length) store.put(put)
        })
      }
      entries.on('change', onRemote)
      cleanups.push(() => entries.off('change', onRemote))

      // presence: our cursor and selection as awareness; everyone else's as instance_presence records
      const me = computed<TLUser>('user', () => ({ id: `user:${user.id}` as TLUser['id'], typeName: 'user', name: user.name, color: user.color, imageUrl: '', meta: {} }))
      const presence = createPresenceStateDerivation(me, { instanceId: InstancePresenceRecordType.createId(String(doc.clientID)) })(store)
      cleanups.push(react('publish presence', () => provider.awareness.setLocalStateField('presence', presence.get())))
      const onAwareness = ({ added, updated, removed }: { added: number[]; updated: number[]; removed: number[] }) => {
        const states = provider.awareness.getStates() as Map<number, { presence?: TLInstancePresence }>
        const put: TLInstancePresence[] = []
        for (const id of [...added, ...updated]) {
          const state = states.get(id)?.presence
          if (state && id !== doc.clientID) put.push(state)
        }
        store.mergeRemoteChanges(() => {
          if (removed.length) store.remove(removed.map((id) => InstancePresenceRecordType.createId(String(id))))
          if (put.length) store.put(put)
        })
      }
      provider.awareness.on('change', onAwareness)
      cleanups.push(() => provider.awareness.off('change', onAwareness))
      setStatus({ store, status: 'synced-remote', connectionStatus: 'online' })
    }
    provider.on('sync', onFirstSync)
    provider.on('status', ({ status: s }: { status: string }) => {
      setStatus((current) => (current.status === 'synced-remote' ? { store, status: 'synced-remote', connectionStatus: s === 'connected' ? 'online' : 'offline' } : current))
    })
    return () => {
      cleanups.forEach((cleanup) => cleanup())
      provider.destroy()
      doc.destroy()
    }
  }, [connection])

  return status
}
