// A board of n shapes of every kind an export must get right (geo with text, text, notes, freehand draw,
// frames holding a shape, arrows bound to two shapes), drawn through the editor's own API so the records
// are exactly what tldraw writes. Used by the benchmarks and the renderer tests (window.collabSampleBoard).
import {
  Editor,
  compressLegacySegments,
  createBindingId,
  createShapeId,
  toRichText,
  type TLShapeId,
  type TLShapePartial,
} from 'tldraw'

const COLORS = ['red', 'blue', 'green', 'orange', 'violet', 'black'] as const

export function drawSampleBoard(editor: Editor, n: number): void {
  const cols = Math.max(1, Math.ceil(Math.sqrt(n)))
  const shapes: TLShapePartial[] = []
  const geoIds: TLShapeId[] = []
  const arrows: { arrow: TLShapeId; from: TLShapeId; to: TLShapeId }[] = []
  for (let i = 0; i < n; i++) {
    const x = (i % cols) * 300
    const y = Math.floor(i / cols) * 240
    const id = createShapeId(`s${i}`)
    const color = COLORS[i % COLORS.length]
    switch (i % 6) {
      case 0:
        geoIds.push(id)
        shapes.push({ id, type: 'geo', x, y, props: { geo: 'rectangle', w: 200, h: 120, color, fill: 'solid', richText: toRichText(`Box ${i}`) } })
        break
      case 1:
        shapes.push({ id, type: 'text', x, y, props: { richText: toRichText(`Text ${i}`), color } })
        break
      case 2:
        shapes.push({ id, type: 'note', x, y, props: { richText: toRichText(`Note ${i}`), color } })
        break
      case 3: {
        const points = Array.from({ length: 24 }, (_, k) => ({ x: k * 8, y: 40 + Math.sin(k / 3) * 30, z: 0.5 }))
        shapes.push({ id, type: 'draw', x, y, props: { segments: compressLegacySegments([{ type: 'free', points }]), color, isComplete: true } })
        break
      }
      case 4:
        shapes.push({ id, type: 'frame', x, y, props: { w: 240, h: 180, name: `Frame ${i}` } })
        shapes.push({ id: createShapeId(`s${i}-in`), type: 'geo', parentId: id, x: 20, y: 30, props: { geo: 'ellipse', w: 120, h: 80, color } })
        break
      default:
        if (geoIds.length >= 2) {
          shapes.push({ id, type: 'arrow', x, y, props: { color } })
          arrows.push({ arrow: id, from: geoIds[geoIds.length - 2], to: geoIds[geoIds.length - 1] })
        } else {
          shapes.push({ id, type: 'geo', x, y, props: { geo: 'star', w: 100, h: 100, color } })
        }
    }
  }
  editor.run(() => {
    editor.createShapes(shapes)
    editor.createBindings(
      arrows.flatMap(({ arrow, from, to }) => [
        { id: createBindingId(), type: 'arrow', fromId: arrow, toId: from, props: { terminal: 'start', normalizedAnchor: { x: 0.5, y: 0.5 }, isExact: false, isPrecise: false } },
        { id: createBindingId(), type: 'arrow', fromId: arrow, toId: to, props: { terminal: 'end', normalizedAnchor: { x: 0.5, y: 0.5 }, isExact: false, isPrecise: false } },
      ]),
    )
  })
}
