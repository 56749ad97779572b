import { expect, test } from 'vitest'
import { createDueQueue } from '../../firmware-sim/_due-queue.ts'
import { createRandom } from '../../firmware-sim/_random.ts'

test('a due queue gives items back earliest first, ties in the order they were pushed', () => {
  const queue = createDueQueue<string>()
  expect(queue.pop()).toBeUndefined()
  expect(queue.peekAt()).toBeUndefined()
  queue.push(30, 'c')
  queue.push(10, 'a1')
  queue.push(20, 'b')
  queue.push(10, 'a2')
  expect(queue.size).toBe(4)
  expect(queue.peekAt()).toBe(10)
  const order: string[] = []
  for (let entry = queue.pop(); entry !== undefined; entry = queue.pop()) order.push(entry.item)
  expect(order).toEqual(['a1', 'a2', 'b', 'c'])
})

test('a due queue stays ordered through many interleaved pushes and pops', () => {
  const random = createRandom(42)
  const queue = createDueQueue<number>()
  const popped: number[] = []
  for (let i = 0; i < 5000; i++) {
    const atMs = Math.floor(random.uniform(0, 1000))
    queue.push(atMs, atMs)
    if (i % 3 === 0) popped.push((queue.pop() as { atMs: number }).atMs)
  }
  const rest: number[] = []
  for (let entry = queue.pop(); entry !== undefined; entry = queue.pop()) rest.push(entry.atMs)
  expect(rest).toEqual([...rest].sort((a, b) => a - b))
  expect(popped.length + rest.length).toBe(5000)
})
