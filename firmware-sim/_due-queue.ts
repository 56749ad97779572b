/**
 * A min-heap of items by due time: the fleet keeps every device's next event here and runs one
 * timer for the earliest, instead of a timer per device.
 */
export interface DueQueue<T> {
  readonly size: number
  /** Adds `item` due at `atMs`; items due at the same time come out in the order they went in. */
  push(atMs: number, item: T): void
  /** The earliest due time, or undefined when empty. */
  peekAt(): number | undefined
  /** Removes and returns the earliest item, or undefined when empty. */
  pop(): { atMs: number; item: T } | undefined
}

interface Entry<T> {
  atMs: number
  order: number
  item: T
}

/** Creates an empty {@link DueQueue}. */
export function createDueQueue<T>(): DueQueue<T> {
  const heap: Array<Entry<T>> = []
  let pushed = 0
  const before = (a: Entry<T>, b: Entry<T>): boolean =>
    a.atMs < b.atMs || (a.atMs === b.atMs && a.order < b.order)
  const swap = (i: number, j: number): void => {
    const entry = heap[i] as Entry<T>
    heap[i] = heap[j] as Entry<T>
    heap[j] = entry
  }
  return {
    get size() {
      return heap.length
    },
    push(atMs, item) {
      heap.push({ atMs, order: pushed++, item })
      let child = heap.length - 1
      while (child > 0) {
        const parent = (child - 1) >> 1
        if (!before(heap[child] as Entry<T>, heap[parent] as Entry<T>)) break
        swap(child, parent)
        child = parent
      }
    },
    peekAt: () => heap[0]?.atMs,
    pop() {
      const top = heap[0]
      if (top === undefined) return undefined
      const last = heap.pop() as Entry<T>
      if (heap.length > 0) {
        heap[0] = last
        let parent = 0
        for (;;) {
          const left = 2 * parent + 1
          const right = left + 1
          let smallest = parent
          if (left < heap.length && before(heap[left] as Entry<T>, heap[smallest] as Entry<T>))
            smallest = left
          if (right < heap.length && before(heap[right] as Entry<T>, heap[smallest] as Entry<T>))
            smallest = right
          if (smallest === parent) break
          swap(parent, smallest)
          parent = smallest
        }
      }
      return { atMs: top.atMs, item: top.item }
    },
  }
}
