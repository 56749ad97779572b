import type Database from 'better-sqlite3'
import type { Logger } from 'pino'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'

/** Options of {@link createJournal}. */
export interface JournalOptions {
  /** The store's database; the journal writes in its transactions, on the main thread. */
  db: Database.Database
  /**
   * How long the first write of a group waits for others before the commit, in ms. 0 commits at
   * the end of the event-loop turn: the packets of one socket read (aedes hands them over together)
   * and whatever arrived while the previous commit waited for the disk share one commit.
   */
  commitWindowMs: number
  /** Most writes in one commit; a full group commits at once. */
  maxBatch: number
  logger: Logger
  /** Where the journal's metrics are registered. */
  registry?: Registry
}

/**
 * Group commit on the store: writes queued from anywhere on the main thread run together in one
 * SQLite transaction, and each writer hears, in queue order, that its write is durable (or that
 * it is not). The broker acknowledges a device's message only from that callback.
 */
export interface Journal {
  /**
   * Queues `work` (synchronous SQL, run inside the next group's transaction) and calls `done`
   * once the transaction has committed, or with the error when it could not. `work` null queues
   * nothing to write, only a place in the order: `done` comes after the writes queued before it.
   * Callbacks come in queue order; with nothing queued, a null `work` is done at once.
   */
  write(work: (() => void) | null, done: (error: Error | null) => void): void
  /** Writes queued and not yet committed. */
  readonly pending: number
  /** Commits what is queued now, synchronously. */
  flush(): void
  /** Commits what is queued, then refuses further writes. */
  close(): void
}

interface Entry {
  work: (() => void) | null
  done: (error: Error | null) => void
}

/** Creates the journal's group commit on `db`. */
export function createJournal(options: JournalOptions): Journal {
  const { db, logger } = options
  let queue: Entry[] = []
  let timer: NodeJS.Timeout | NodeJS.Immediate | undefined
  let closed = false
  const figures = options.registry === undefined ? undefined : journalMetrics(options.registry)

  const schedule = (): void => {
    if (timer !== undefined) return
    timer = options.commitWindowMs === 0 ? setImmediate(commit) : setTimeout(commit, options.commitWindowMs)
  }

  const runAll = db.transaction((entries: Entry[]) => {
    for (const entry of entries) entry.work?.()
  })
  const runOne = db.transaction((entry: Entry) => entry.work?.())

  /**
   * Commits the queued group. When the group fails, its writes are tried again one by one, each
   * in its own transaction, up to the first that fails: that one and every write after it fail
   * (their messages are not acknowledged), so no device's messages are stored with a gap before
   * a later one. When the disk itself fails, every write fails.
   */
  function commit(): void {
    if (timer !== undefined) {
      if (options.commitWindowMs === 0) clearImmediate(timer as NodeJS.Immediate)
      else clearTimeout(timer as NodeJS.Timeout)
      timer = undefined
    }
    const entries = queue
    queue = []
    figures?.pending.set(0)
    if (entries.length === 0) return
    const writes = entries.filter((entry) => entry.work !== null).length
    const started = performance.now()
    const outcomes: Array<Error | null> = []
    try {
      if (writes > 0) runAll(entries)
      for (const _ of entries) outcomes.push(null)
    } catch (groupError) {
      figures?.groupFailures.inc()
      logger.warn({ err: groupError, writes }, 'a journal commit failed; trying its writes one by one')
      let first: Error | undefined
      for (const entry of entries) {
        if (first !== undefined) {
          outcomes.push(
            new Error(`Cannot journal this write as an earlier one of its commit failed: ${first.message}`),
          )
          continue
        }
        try {
          if (entry.work !== null) runOne(entry)
          outcomes.push(null)
        } catch (error) {
          first = error as Error
          outcomes.push(first)
        }
      }
    }
    if (writes > 0) {
      figures?.commitSeconds.observe((performance.now() - started) / 1000)
      figures?.batch.observe(writes)
    }
    const failed = outcomes.filter((outcome) => outcome !== null).length
    if (failed > 0) {
      figures?.failures.inc(failed)
      logger.error(
        { err: outcomes.find((outcome) => outcome !== null), failed },
        'cannot journal some writes: the messages among them are not acknowledged',
      )
    }
    entries.forEach((entry, index) => {
      try {
        entry.done(outcomes[index] ?? null)
      } catch (error) {
        logger.error({ err: error }, 'a journal callback failed')
      }
    })
  }

  const journal: Journal = {
    write(work, done) {
      if (closed) {
        done(new Error('Cannot journal the message as the gateway is shutting down'))
        return
      }
      if (work === null && queue.length === 0) {
        done(null)
        return
      }
      queue.push({ work, done })
      figures?.pending.set(queue.length)
      if (queue.length >= options.maxBatch) commit()
      else schedule()
    },
    get pending() {
      return queue.length
    },
    flush: () => commit(),
    close() {
      commit()
      closed = true
    },
  }
  return journal
}

function journalMetrics(registry: Registry) {
  return {
    commitSeconds: new Histogram({
      name: 'taureau_journal_commit_seconds',
      help: 'Time of one group commit of the journal (the transaction and, in power-loss mode, its fsync)',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    batch: new Histogram({
      name: 'taureau_journal_commit_writes',
      help: 'Writes (messages and results) in one group commit of the journal',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
      registers: [registry],
    }),
    pending: new Gauge({
      name: 'taureau_journal_pending_writes',
      help: 'Writes queued for the next group commit when last sampled',
      registers: [registry],
    }),
    failures: new Counter({
      name: 'taureau_journal_failed_writes_total',
      help: 'Writes the journal could not commit: their messages were not acknowledged',
      registers: [registry],
    }),
    groupFailures: new Counter({
      name: 'taureau_journal_failed_commits_total',
      help: 'Group commits that failed and were retried write by write',
      registers: [registry],
    }),
  }
}
