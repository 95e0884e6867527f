/**
 * Orders operations on overlapping ranges: an operation waits for every earlier one whose
 * range overlaps its own, while operations on disjoint ranges run concurrently. This gives
 * overlapping writes issue order (and makes a read-modify-write of a shared sector atomic
 * with respect to the other writes of that sector) without serializing unrelated I/O.
 */
interface Held {
  start: number;
  end: number;
  done: Promise<void>;
}

export class RangeLocks {
  readonly #held: Held[] = [];

  /** Runs `fn` once every earlier overlapping operation has finished. */
  async run<T>(start: number, end: number, fn: () => Promise<T>): Promise<T> {
    let waits: Promise<void>[] | undefined;
    for (const h of this.#held) if (h.start < end && start < h.end) (waits ??= []).push(h.done);
    let release!: () => void;
    const me: Held = { start, end, done: new Promise<void>((r) => (release = r)) };
    this.#held.push(me);
    try {
      if (waits) await Promise.all(waits);
      return await fn();
    } finally {
      this.#held.splice(this.#held.indexOf(me), 1);
      release();
    }
  }

  /** Resolves when every operation started so far has finished. */
  async idle(): Promise<void> {
    while (this.#held.length > 0) await Promise.all(this.#held.map((h) => h.done));
  }
}
