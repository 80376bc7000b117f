// Board records <-> a tldraw store, shared by the export renderer and the example app (examples/tldraw).
// Type-only imports: the module carries no tldraw code of its own, so each app bundles its one copy.
import type { SerializedSchema, TLRecord, TLStore, TLStoreSnapshot } from 'tldraw'

/** The stored board: records of the `tl_<room>` YKeyValue and the schema of the `meta` map. */
export interface BoardData {
  records: TLRecord[]
  schema: SerializedSchema | null
}

/**
 * Why this tldraw cannot read a board, or null if it can. tldraw migrates older records forward but
 * cannot move newer ones back: name every migration sequence the board has at a newer version than ours.
 */
export function newerSchemaProblem(ours: SerializedSchema, board: SerializedSchema | null): string | null {
  if (!board || board.schemaVersion !== 2 || ours.schemaVersion !== 2) return null
  const newer: string[] = []
  for (const [sequence, version] of Object.entries(board.sequences)) {
    const mine = ours.sequences[sequence]
    if (mine !== undefined && version > mine) newer.push(`${sequence} ${version} (this tldraw: ${mine})`)
  }
  if (newer.length === 0) return null
  return `the board was written by a newer tldraw than this one: ${newer.join(', ')}`
}

/** The snapshot to build a store from; throws with newerSchemaProblem's message when it cannot be read. */
export function boardSnapshot(ours: SerializedSchema, board: BoardData): TLStoreSnapshot {
  const problem = newerSchemaProblem(ours, board.schema)
  if (problem) throw new Error(`board_too_new: ${problem}`)
  const store = Object.fromEntries(board.records.map((record) => [record.id, record]))
  return { store, schema: board.schema ?? ours } as TLStoreSnapshot
}

/** Replace a live store's document records with the board's (migrated to our schema). */
export function loadBoardInto(store: TLStore, board: BoardData): void {
  store.loadStoreSnapshot(boardSnapshot(store.schema.serialize(), board))
}
