/**
 * Long synchronous work on the serving thread cut into slices, so requests queued meanwhile
 * are answered between them instead of after the whole job. A live snapshot merges the
 * sealed upper's index into the stack's lookup: with 10^5 entries and code gone cold in the
 * seconds between snapshots that is 20–100 ms of one turn (docs/benchmarks.md, live
 * snapshots), longer than any guest write should wait. The work is written once, as a
 * generator that yields at checkpoints (every STEP entries); `runSync` runs it to the end,
 * `runSliced` gives the event loop a turn whenever a slice has run past its budget.
 */

import { msNow } from './clock.ts';

/** Work that yields at checkpoints and returns T. */
export type Steps<T> = Generator<void, T, void>;

/** Entries a loop handles between checkpoints (well under a millisecond, even cold). */
export const STEP = 1024;

export function runSync<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** Runs `steps`, letting pending I/O in (a setImmediate turn) each time a slice passes `budgetMs`. */
export async function runSliced<T>(steps: Steps<T>, budgetMs = 1): Promise<T> {
  let start = msNow();
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    if (msNow() - start >= budgetMs) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      start = msNow();
    }
  }
}
