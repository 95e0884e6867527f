/**
 * Pacing of background byte streams (a live snapshot's commit, hashing and upload): a token
 * bucket of bytes per second, so a long job moves its bytes evenly instead of in bursts that
 * take memory bandwidth, page cache and a registry's CPU away from serving all at once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidArgumentError } from './errors.ts';
import { ForwardingSource } from './forwarding.ts';
import type { ByteSink, ByteSource } from './types.ts';

/** Bytes a pacer lets through at once before it starts waiting: ~50 ms at the rate, at least 1 MiB. */
const BURST_SECONDS = 0.05;
const MIN_BURST = 1 << 20;

export class Pacer {
  /** Bytes per second; 0: unlimited. */
  readonly rate: number;
  readonly #burst: number;
  /** Bytes that may still pass without waiting (negative: owed). */
  #tokens: number;
  #last = performance.now();
  readonly #signal: AbortSignal | undefined;
  /** Milliseconds spent waiting, for reports. */
  waitedMs = 0;

  /** `signal`: once aborted, every take() throws its reason (how a job is cancelled between chunks). */
  constructor(bytesPerSecond: number, signal?: AbortSignal) {
    this.#signal = signal;
    if (!(Number.isFinite(bytesPerSecond) && bytesPerSecond >= 0)) throw new InvalidArgumentError(`rate ${bytesPerSecond} must be a byte rate >= 0 (0: unlimited)`);
    this.rate = bytesPerSecond;
    this.#burst = Math.max(MIN_BURST, bytesPerSecond * BURST_SECONDS);
    this.#tokens = this.#burst;
  }

  /** Resolves once `n` more bytes may move at the rate (at once while within the burst). */
  async take(n: number): Promise<void> {
    this.#signal?.throwIfAborted();
    if (this.rate === 0) return;
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) * this.rate) / 1000);
    this.#last = now;
    this.#tokens -= n;
    if (this.#tokens >= 0) return;
    const ms = (-this.#tokens * 1000) / this.rate;
    this.waitedMs += ms;
    try {
      await sleep(ms, undefined, { signal: this.#signal });
    } catch (e) {
      throw this.#signal?.aborted ? this.#signal.reason : e;
    }
  }
}

/** A source whose reads wait for the pacer; no synchronous path, which would bypass it. */
export class PacedSource extends ForwardingSource {
  readonly #pacer: Pacer;
  constructor(inner: ByteSource, pacer: Pacer) {
    super(inner);
    this.#pacer = pacer;
  }
  override async read(buf: Uint8Array, offset: number): Promise<number> {
    await this.#pacer.take(Math.min(buf.length, Math.max(0, this.size - offset)));
    return this.inner.read(buf, offset);
  }
  override tryReadSync(): number | undefined {
    return undefined;
  }
}

/** A sink whose writes wait for the pacer. Closing closes `inner`. */
export function pacedSink<S extends ByteSink>(inner: S, pacer: Pacer): ByteSink {
  if (pacer.rate === 0) return inner;
  return {
    name: inner.name,
    get position() {
      return inner.position;
    },
    write: async (buf) => {
      await pacer.take(buf.length);
      await inner.write(buf);
    },
    close: () => inner.close(),
  };
}
