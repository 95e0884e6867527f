/**
 * The snapshot thread of a live disk, seen from the serving thread: one worker thread at the
 * lowest CPU priority (nice 19 and SCHED_IDLE, src/io/priority.ts) that commits sealed uppers
 * and pushes images (jobs.ts) with its own file I/O and its own registry client, so the
 * serving thread neither reads the sealed data nor writes the upload's sockets. Started on
 * the first job; it never keeps the process alive while idle; close() cancels what runs
 * (between chunks) and ends the thread.
 */
import module from 'node:module';
import { Worker } from 'node:worker_threads';
import { ObdError, type Errno } from '../io/errors.ts';
import type { JobReply, JobRequest, WorkerSettings } from './background-worker.ts';
import { cancelled, type Jobs } from './jobs.ts';

/** A job failed on the snapshot thread: its message, errno and error class name as it was there. */
export class BackgroundJobError extends ObdError {
  override readonly errno: Errno;
  constructor(e: { name: string; message: string; errno: string }) {
    super(e.message);
    this.name = e.name;
    this.errno = e.errno as Errno;
  }
}

/** The thread died (or was ended) with jobs outstanding. */
export class BackgroundThreadError extends ObdError {}

/** How long close() lets a cancelled job reach its next chunk before the thread is ended. */
const CANCEL_GRACE_MS = 5000;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class BackgroundThread {
  readonly #settings: WorkerSettings;
  #worker: Worker | undefined;
  readonly #pending = new Map<number, Pending>();
  /** Called when the last outstanding job is answered (close() waits on it). */
  #drained: (() => void) | undefined;
  #next = 0;
  #closed = false;

  constructor(opts: { nice?: number; idle?: boolean } = {}) {
    this.#settings = { compileCache: module.getCompileCacheDir?.(), nice: opts.nice ?? 19, idle: opts.idle ?? true };
  }

  /** Runs a job on the thread (after those sent before it). */
  run<K extends keyof Jobs>(kind: K, job: Jobs[K]['job']): Promise<Jobs[K]['result']> {
    if (this.#closed) return Promise.reject(cancelled());
    const w = this.#worker ?? this.#start();
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      try {
        w.postMessage({ id, kind, job } as JobRequest);
      } catch (e) {
        // Not cloneable (a callback in the options): the caller's mistake, refused here.
        reject(e);
        return;
      }
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      if (this.#pending.size === 1) w.ref();
    });
  }

  #start(): Worker {
    const w = new Worker(new URL('./background-worker.js', import.meta.url), { workerData: this.#settings });
    w.on('message', (m: JobReply) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (this.#pending.size === 0) {
        w.unref();
        this.#drained?.();
      }
      if ('error' in m) p.reject(new BackgroundJobError(m.error));
      else p.resolve(m.result);
    });
    const lost = (why: string) => {
      if (this.#worker !== w) return;
      this.#worker = undefined;
      const e = new BackgroundThreadError(`snapshot thread ${why}`);
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
    };
    w.on('error', (e) => lost(`failed: ${e.message}`));
    w.on('exit', (code) => lost(`exited with code ${code}`));
    w.unref();
    this.#worker = w;
    return w;
  }

  /**
   * Cancels running and queued jobs (they reject with a ClosedError at their next chunk: a
   * commit leaves no file, a push no manifest) and ends the thread.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const w = this.#worker;
    if (!w) return;
    if (this.#pending.size > 0) {
      w.postMessage({ cancel: true } as JobRequest);
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((r) => {
        this.#drained = r;
        timer = setTimeout(r, CANCEL_GRACE_MS);
      });
      clearTimeout(timer);
      this.#drained = undefined;
    }
    this.#worker = undefined;
    const e = new BackgroundThreadError('snapshot thread ended');
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
    await w.terminate();
  }
}
