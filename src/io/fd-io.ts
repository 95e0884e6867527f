/**
 * Positional reads and writes on a raw file descriptor through the callback fs API. The
 * FileHandle promise methods cost several times more per call (measured: 16k scattered
 * 4 KiB reads take ~70–150 ms through FileHandle.read, ~19 ms through fs.read), which
 * dominates small-block commits and NBD-sized I/O.
 */
import { read, readSync, write, writeSync } from 'node:fs';

function readOnce(fd: number, buf: Uint8Array, at: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, at, len, pos, (e, n) => (e ? reject(e) : resolve(n))));
}

/** Reads into all of `buf` from `pos`, stopping early only at end of file; resolves the count. */
export async function preadFull(fd: number, buf: Uint8Array, pos: number): Promise<number> {
  let done = await readOnce(fd, buf, 0, buf.length, pos);
  while (done < buf.length) {
    const n = await readOnce(fd, buf, done, buf.length - done, pos + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/**
 * Writes all of `buf` at `pos`. One promise and one callback per call whatever the number of
 * short writes: this is every NBD write's path, where each extra async frame is garbage.
 */
export function pwriteFull(fd: number, buf: Uint8Array, pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (e: NodeJS.ErrnoException | null, n: number): void => {
      if (e) return reject(e);
      done += n;
      if (done < buf.length) write(fd, buf, done, buf.length - done, pos + done, step);
      else resolve();
    };
    write(fd, buf, 0, buf.length, pos, step);
  });
}

/** Synchronous pwriteFull, for a thread whose only job is the write (a snapshot's background commit). */
export function pwriteFullSync(fd: number, buf: Uint8Array, pos: number): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, pos + done);
}

/** Synchronous readFull, for batch jobs (see copy.ts) where per-call cost dominates. */
export function preadFullSync(fd: number, buf: Uint8Array, pos: number): number {
  let done = 0;
  while (done < buf.length) {
    const n = readSync(fd, buf, done, buf.length - done, pos + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** Reads up to this size may be served synchronously (see SyncReadGate). */
const SYNC_MAX = 256 * 1024;
/** A synchronous read slower than this probably came from the disk, not the page cache. */
const SLOW_MS = 0.25;
/** Slow reads in a row that mean the disk is being hit (one alone is a preemption or a fault). */
const SLOW_RUN = 4;
/** How long reads stay asynchronous once they turned slow. */
const ASYNC_BACKOFF_MS = 1000;

/**
 * Decides when a file read may be synchronous. From the page cache a pread costs ~1 µs where
 * a thread-pool round trip costs ~10–30 µs, so small reads go synchronous. Several slow reads
 * in a row mean the disk is being hit instead (a single slow one is a preemption or a page
 * fault); reads then go to the thread pool for a second, so a cold disk stalls the event loop
 * for a few reads at most.
 */
export class SyncReadGate {
  #until: number;
  #slowRun = 0;
  readonly #now: () => number;
  /** `now` (milliseconds) is replaceable so tests can make reads look slow. */
  constructor(enabled = true, now: () => number = () => performance.now()) {
    this.#until = enabled ? 0 : Infinity;
    this.#now = now;
  }
  /** Reads `length` bytes synchronously into `buf` at `pos`, or returns undefined to go async. */
  read(fd: number, buf: Uint8Array, pos: number): number | undefined {
    if (buf.length > SYNC_MAX) return undefined;
    // One clock read serves both the back-off check and the timing (each costs ~45 ns).
    const t0 = this.#now();
    if (this.#until > t0) return undefined;
    const n = preadFullSync(fd, buf, pos);
    const t1 = this.#now();
    if (t1 - t0 <= SLOW_MS) this.#slowRun = 0;
    else if (++this.#slowRun >= SLOW_RUN) {
      this.#until = t1 + ASYNC_BACKOFF_MS;
      this.#slowRun = 0;
    }
    return n;
  }
}
