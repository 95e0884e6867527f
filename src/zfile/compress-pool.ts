/**
 * A pool of compression workers. Batches are transferred to a worker and back (never copied);
 * the caller keeps them in submission order, so the output does not depend on which worker
 * finished first. Starting a worker costs ~80 ms, so writers share one pool per thread count,
 * and a worker takes jobs only once it says it is ready (available() tells the writer, which
 * compresses on its own thread until then); idle workers are unref'd and never keep the
 * process alive.
 */
import module from 'node:module';
import { Worker } from 'node:worker_threads';
import type { BlockParams } from './compress-blocks.ts';
import type { CompressDone, CompressJob, CompressReady } from './compress-worker.ts';
import { CompressionError } from './errors.ts';

/** A batch of input blocks and the buffers its compressed form goes into. */
export interface Batch {
  input: Uint8Array;
  inputLength: number;
  output: Uint8Array;
  lengths: Uint32Array;
  /** Output bytes, valid once compressed. */
  size: number;
}

interface Slot {
  worker: Worker;
  inFlight: number;
  /** The worker has loaded its code and waits for jobs. */
  ready: boolean;
}

/** Jobs queued on one worker before it counts as busy: one running, one waiting. */
const QUEUED = 2;

interface Pending {
  slot: Slot;
  resolve: (b: Batch) => void;
  reject: (e: Error) => void;
}

export class CompressPool {
  readonly #slots: Slot[] = [];
  readonly #pending = new Map<number, Pending>();
  readonly #readyWaiters: (() => void)[] = [];
  #nextId = 0;
  /** Batches handed to workers so far. */
  #jobs = 0;
  #failure: Error | undefined;

  readonly #key: string;

  /** `priority`: the workers' nice value (19 = run only when the CPU is otherwise idle; 0 = as the caller). */
  constructor(threads: number, priority = 0) {
    this.#key = poolKey(threads, priority);
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(new URL('./compress-worker.js', import.meta.url), { workerData: { compileCache: module.getCompileCacheDir?.(), priority } });
      const slot: Slot = { worker, inFlight: 0, ready: false };
      worker.on('message', (m: CompressDone | CompressReady) => {
        if (!('ready' in m)) return this.#done(m);
        slot.ready = true;
        if (this.#slots.every((s) => s.ready)) for (const w of this.#readyWaiters.splice(0)) w();
      });
      worker.on('error', (e) => this.#fail(slot, new CompressionError(`compression worker failed: ${e.message}`, { cause: e })));
      worker.on('exit', (code) => this.#fail(slot, new CompressionError(`compression worker exited with code ${code}`)));
      // After the listeners: a 'message' listener added to an unref'd worker refs it again
      // (a worker that reported ready but never got a job kept the process alive).
      worker.unref();
      this.#slots.push(slot);
    }
  }

  /** A live pool of `threads` workers, created on first use and shared by every writer. */
  static shared(threads: number, priority = 0): CompressPool {
    const key = poolKey(threads, priority);
    let pool = shared.get(key);
    if (!pool || pool.#failure) {
      pool = new CompressPool(threads, priority);
      shared.set(key, pool);
    }
    return pool;
  }

  /** Terminates every shared pool (a server at stop: no worker outlives it). */
  static async closeShared(): Promise<void> {
    await Promise.all([...shared.values()].map((p) => p.close()));
  }

  get threads(): number {
    return this.#slots.length;
  }

  /** Batches handed to workers so far (the rest of a writer's were compressed on its thread). */
  get jobs(): number {
    return this.#jobs;
  }

  /** Resolves once every worker is ready. */
  whenReady(): Promise<void> {
    if (this.#slots.every((s) => s.ready)) return Promise.resolve();
    return new Promise((resolve) => this.#readyWaiters.push(resolve));
  }

  /** True when a ready worker has room for a job (fewer than QUEUED in flight). */
  available(): boolean {
    return this.#slots.some((s) => s.ready && s.inFlight < QUEUED);
  }

  /**
   * Compresses `batch` on the least busy worker, ready ones first; its buffers are unusable
   * until this resolves.
   */
  compress(params: BlockParams, batch: Batch): Promise<Batch> {
    if (this.#failure) return Promise.reject(this.#failure);
    let slot = this.#slots[0]!;
    for (const s of this.#slots) if ((s.ready && !slot.ready) || (s.ready === slot.ready && s.inFlight < slot.inFlight)) slot = s;
    const id = this.#nextId++;
    this.#jobs++;
    const job: CompressJob = {
      id,
      params,
      input: batch.input.buffer as ArrayBuffer,
      inputLength: batch.inputLength,
      output: batch.output.buffer as ArrayBuffer,
      lengths: batch.lengths.buffer as ArrayBuffer,
    };
    return new Promise<Batch>((resolve, reject) => {
      this.#pending.set(id, { slot, resolve, reject });
      if (slot.inFlight++ === 0) slot.worker.ref();
      slot.worker.postMessage(job, [job.input, job.output, job.lengths]);
    });
  }

  #done(m: CompressDone): void {
    const p = this.#pending.get(m.id);
    if (!p) return;
    this.#pending.delete(m.id);
    if (--p.slot.inFlight === 0) p.slot.worker.unref();
    if (m.error !== undefined) {
      p.reject(new CompressionError(`compression worker: ${m.error}`));
      return;
    }
    p.resolve({
      input: new Uint8Array(m.input),
      inputLength: m.inputLength,
      output: new Uint8Array(m.output),
      lengths: new Uint32Array(m.lengths),
      size: m.size,
    });
  }

  #fail(slot: Slot, e: Error): void {
    this.#failure ??= e;
    if (shared.get(this.#key) === this) shared.delete(this.#key);
    for (const [id, p] of this.#pending) {
      if (p.slot !== slot) continue;
      this.#pending.delete(id);
      p.reject(e);
    }
  }

  async close(): Promise<void> {
    if (shared.get(this.#key) === this) shared.delete(this.#key);
    this.#failure ??= new CompressionError('compression pool closed');
    const slots = this.#slots.splice(0);
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      p.reject(this.#failure);
    }
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}

const shared = new Map<string, CompressPool>();

function poolKey(threads: number, priority: number): string {
  return `${threads}/${priority}`;
}
