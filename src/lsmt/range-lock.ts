/**
 * Orders operations on overlapping ranges: an operation waits for every earlier one whose
 * range overlaps its own, while operations on disjoint ranges run concurrently. This gives
 * overlapping writes issue order (and makes a read-modify-write of a shared sector atomic
 * with respect to the other writes of that sector) without serializing unrelated I/O.
 */
interface Held {
  start: number;
  end: number;
  /** Made only when someone waits (most writes overlap nothing: no promise for them). */
  done: Promise<void> | undefined;
  release: (() => void) | undefined;
}

function doneOf(h: Held): Promise<void> {
  return (h.done ??= new Promise<void>((r) => (h.release = r)));
}

export class RangeLocks {
  readonly #held: Held[] = [];

  /** Runs `fn` once every earlier overlapping operation has finished. */
  async run<T>(start: number, end: number, fn: () => Promise<T>): Promise<T> {
    let waits: Promise<void>[] | undefined;
    for (const h of this.#held) if (h.start < end && start < h.end) (waits ??= []).push(doneOf(h));
    const me: Held = { start, end, done: undefined, release: undefined };
    this.#held.push(me);
    try {
      if (waits) await Promise.all(waits);
      return await fn();
    } finally {
      this.#held.splice(this.#held.indexOf(me), 1);
      me.release?.();
    }
  }

  /** Resolves when every operation started so far has finished. */
  async idle(): Promise<void> {
    while (this.#held.length > 0) await Promise.all(this.#held.map(doneOf));
  }
}
