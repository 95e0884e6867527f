/**
 * A byte stream hashed as it passes: the consumer may stop early (a tar reader stops at the
 * end-of-archive blocks, a gzip reader at the end of its members), so `finish()` reads and
 * hashes whatever it left, and only then is the digest the one of the whole stream.
 */
import { createHash, type Hash } from 'node:crypto';

export class HashedStream implements AsyncIterable<Uint8Array> {
  readonly #source: AsyncIterator<Uint8Array>;
  readonly #hash: Hash = createHash('sha256');
  readonly #onBytes: ((n: number) => void) | undefined;
  #bytes = 0;
  #done = false;

  constructor(source: AsyncIterable<Uint8Array>, onBytes?: (n: number) => void) {
    this.#source = source[Symbol.asyncIterator]();
    this.#onBytes = onBytes;
  }

  get bytes(): number {
    return this.#bytes;
  }

  async #next(): Promise<IteratorResult<Uint8Array>> {
    if (this.#done) return { done: true, value: undefined };
    const r = await this.#source.next();
    if (r.done) this.#done = true;
    else {
      this.#hash.update(r.value);
      this.#bytes += r.value.length;
      this.#onBytes?.(r.value.length);
    }
    return r;
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    // A consumer that stops early (return()) leaves the source open for finish().
    return { next: () => this.#next(), return: async () => ({ done: true, value: undefined }) };
  }

  /** Drains the rest of the source and resolves the digest of every byte (`sha256:<hex>`). */
  async finish(): Promise<string> {
    while (!(await this.#next()).done);
    return 'sha256:' + this.#hash.digest('hex');
  }

  /** Stops reading the source (after a failure). */
  async close(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    await this.#source.return?.();
  }
}
