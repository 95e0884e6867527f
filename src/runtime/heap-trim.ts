/**
 * Gives memory the C heap keeps back to the system, for long-running servers.
 *
 * Freed ArrayBuffer backing stores and V8's compiler zones go back to glibc's malloc, which
 * keeps them: after an image's open (every layer's head and tail in flight at once) or a burst
 * of reads, tens of MB stay resident though nothing uses them (bench/memory.ts: ~60 MB of a
 * 64-layer serve). malloc_trim(0) hands free pages back. It runs on a libuv thread (koffi's
 * async call), never on the serving thread, and only when the resident size grew since the
 * last trim, so an idle or steady server does nothing.
 */
import { libc } from '../io/libc.ts';

export interface HeapTrimOptions {
  /** How often the resident size is checked (default 0.5 s). */
  everyMs?: number;
  /** Growth of the resident size since the last trim that starts another (default 4 MiB). */
  minGrowth?: number;
}

export interface HeapTrimmer {
  /** Trims done so far. */
  readonly trims: number;
  stop(): void;
}

type Trim = { async(pad: number, done: (err: unknown, result: number) => void): void };

/** Starts trimming; a no-op trimmer where glibc's malloc_trim cannot be reached. */
export function startHeapTrim(opts: HeapTrimOptions = {}): HeapTrimmer {
  const minGrowth = opts.minGrowth ?? 4 * 2 ** 20;
  let trim: Trim | undefined | null;
  let floor = 0;
  let busy = false;
  let trims = 0;
  const timer = setInterval(() => {
    const rss = process.memoryUsage.rss();
    floor = Math.min(floor, rss);
    if (busy || rss - floor < minGrowth) return;
    if (trim === undefined) {
      try {
        trim = libc('malloc_trim').lib.func('int malloc_trim(size_t pad)') as unknown as Trim;
      } catch {
        trim = null;
      }
    }
    if (!trim) return clearInterval(timer);
    busy = true;
    trim.async(0, () => {
      busy = false;
      trims++;
      floor = process.memoryUsage.rss();
    });
  }, opts.everyMs ?? 500);
  timer.unref();
  return {
    get trims() {
      return trims;
    },
    stop: () => clearInterval(timer),
  };
}
