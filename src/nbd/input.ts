/**
 * The bytes received on one connection, kept as the chunks the socket delivered (no copy on
 * arrival). Frames are taken out either synchronously (transmission: parse what is there) or
 * by awaiting them (handshake: one option at a time).
 */
import { NbdDisconnect } from './errors.ts';

export class InputQueue {
  #chunks: Buffer[] = [];
  /** Read position inside #chunks[0]. */
  #head = 0;
  #length = 0;
  #waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  #ended: Error | undefined;

  /** Bytes available. */
  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0 || this.#ended) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
    const w = this.#waiter;
    if (w && this.#length >= w.n) {
      this.#waiter = undefined;
      w.resolve(this.take(w.n));
    }
  }

  /** No more input will come: a pending or later `read` fails with `reason`. */
  end(reason: Error): void {
    this.#ended ??= reason;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(this.#ended);
  }

  /** Resolves with exactly `n` bytes once they have arrived. */
  read(n: number): Promise<Buffer> {
    if (this.#length >= n) return Promise.resolve(this.take(n));
    if (this.#ended) return Promise.reject(this.#ended);
    if (this.#waiter) return Promise.reject(new NbdDisconnect('concurrent read on one connection'));
    return new Promise((resolve, reject) => {
      this.#waiter = { n, resolve, reject };
    });
  }

  /**
   * Where the next `n` (≤ length) bytes can be read in place: the first chunk and an offset
   * when they lie in it, else a copy in `scratch` at offset 0. Does not consume.
   */
  peek(n: number, scratch: Buffer): { buf: Buffer; at: number } {
    const first = this.#chunks[0]!;
    if (first.length - this.#head >= n) return { buf: first, at: this.#head };
    this.#copyOut(scratch, n);
    return { buf: scratch, at: 0 };
  }

  /** Consumes `n` (≤ length) bytes: a view into the received chunk when possible, else a copy. */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[0]!;
    const avail = first.length - this.#head;
    if (avail >= n) {
      const out = first.subarray(this.#head, this.#head + n);
      this.skip(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.#copyOut(out, n);
    this.skip(n);
    return out;
  }

  /** Drops up to `n` bytes; returns how many were dropped. */
  skip(n: number): number {
    let left = Math.min(n, this.#length);
    const dropped = left;
    while (left > 0) {
      const first = this.#chunks[0]!;
      const avail = first.length - this.#head;
      if (avail > left) {
        this.#head += left;
        break;
      }
      left -= avail;
      this.#chunks.shift();
      this.#head = 0;
    }
    this.#length -= dropped;
    return dropped;
  }

  #copyOut(dst: Buffer, n: number): void {
    let done = 0;
    let head = this.#head;
    for (let i = 0; done < n; i++) {
      const c = this.#chunks[i]!;
      const k = Math.min(c.length - head, n - done);
      c.copy(dst, done, head, head + k);
      done += k;
      head = 0;
    }
  }
}
