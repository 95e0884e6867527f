/**
 * The tar reader's view of its input: chunks of any size pulled from an async iterator, handed
 * out as subarrays of those chunks wherever a request fits in one (entry data is never copied),
 * copied only when a request spans chunks (a header cut by a chunk boundary). Holds at most the
 * current chunk, so memory is bounded by the producer's chunk size.
 */
const EMPTY = new Uint8Array(0);

export class TarInput {
  readonly #it: AsyncIterator<Uint8Array>;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  #ended = false;
  /** Offset in the stream of the next unread byte. */
  offset = 0;

  constructor(input: AsyncIterable<Uint8Array>) {
    this.#it = input[Symbol.asyncIterator]();
  }

  /** Bytes of the current chunk not handed out yet. */
  get buffered(): number {
    return this.#chunk.length - this.#pos;
  }

  /** Takes `n` bytes of the current chunk; the caller has checked `buffered >= n`. */
  take(n: number): Uint8Array {
    const p = this.#pos;
    this.#pos = p + n;
    this.offset += n;
    return this.#chunk.subarray(p, p + n);
  }

  /** Drops `n` bytes of the current chunk; the caller has checked `buffered >= n`. */
  advance(n: number): void {
    this.#pos += n;
    this.offset += n;
  }

  /** Loads the next non-empty chunk; false at the end of the input. */
  async more(): Promise<boolean> {
    while (!this.#ended) {
      const r = await this.#it.next();
      if (r.done) {
        this.#ended = true;
        break;
      }
      if (r.value.length > 0) {
        this.#chunk = r.value;
        this.#pos = 0;
        return true;
      }
    }
    this.#chunk = EMPTY;
    this.#pos = 0;
    return false;
  }

  /** Exactly `n` bytes, or fewer if the input ends first (then all that was left). */
  async read(n: number): Promise<Uint8Array> {
    if (this.buffered >= n) return this.take(n);
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      if (this.buffered === 0 && !(await this.more())) return out.subarray(0, got);
      const k = Math.min(n - got, this.buffered);
      out.set(this.take(k), got);
      got += k;
    }
    return out;
  }

  /** Up to `max` bytes from one chunk (at least one unless the input has ended). */
  async piece(max: number): Promise<Uint8Array> {
    if (this.buffered === 0 && !(await this.more())) return EMPTY;
    return this.take(Math.min(max, this.buffered));
  }

  /** Skips `n` bytes; returns how many there were. */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      if (this.buffered === 0 && !(await this.more())) break;
      const k = Math.min(left, this.buffered);
      this.advance(k);
      left -= k;
    }
    return n - left;
  }

  /** Reads to the end of the input, discarding it (so a digest over the stream sees it all). */
  async drain(): Promise<void> {
    this.advance(this.buffered);
    while (await this.more()) this.advance(this.buffered);
  }

  /** Tells the producer no more is wanted (when the reader stops early). */
  async close(): Promise<void> {
    this.#chunk = EMPTY;
    this.#pos = 0;
    if (!this.#ended) {
      this.#ended = true;
      await this.#it.return?.();
    }
  }
}
