/**
 * Verified lazy reads (docs/format.md §7.3): VerifyingSource sits between a lazy source and
 * the network, so every fetched chunk is checked before the lazy source returns or stores
 * it; VerifiedStore sits in front of the lazy source's chunk store, so a unit held on disk
 * from an earlier run is checked once before it is served, and dropped when it fails.
 */
import { ShortReadError } from '../io/errors.ts';
import { ForwardingSource } from '../io/forwarding.ts';
import type { ByteSource } from '../io/types.ts';
import { readable } from '../io/util.ts';
import type { ChunkStore, DiskChunkStore } from '../remote/lazy-source.ts';
import { VerityError } from './errors.ts';
import { readExactly, type TreeVerifier } from './verifier.ts';

export interface VerifyingSourceOptions {
  /** Where chunks that failed are fetched again (the same blob without the proxy). */
  retry?: ByteSource;
  /** Fetches of a chunk before the failure stands (default 3). */
  attempts?: number;
  /** How the two sources are reached, for messages (e.g. "through the proxy", "directly"). */
  via?: { inner: string; retry: string };
}

/**
 * A remote blob whose reads are checked against its tree. Reads are widened to whole
 * chunks; a chunk that fails is fetched again (from `retry` after the first failure) and,
 * after `attempts` fetches, the read fails with a VerityError. There is no synchronous path:
 * every byte below is unverified until hashed (verified bytes are served synchronously by
 * the lazy source's store, through VerifiedStore).
 */
export class VerifyingSource extends ForwardingSource {
  readonly verifier: TreeVerifier;
  readonly #retry: ByteSource | undefined;
  readonly #attempts: number;
  readonly #via: { inner: string; retry: string } | undefined;
  /** Chunk checks that failed, chunk refetches, and fetches that failed and went to `retry`. */
  readonly stats = { failures: 0, refetches: 0, fallbacks: 0 };

  constructor(inner: ByteSource, verifier: TreeVerifier, opts: VerifyingSourceOptions = {}) {
    super(inner);
    this.verifier = verifier;
    this.#retry = opts.retry;
    this.#attempts = Math.max(1, opts.attempts ?? 3);
    this.#via = opts.via;
    if (verifier.shape.size !== inner.size) throw new VerityError(inner.name, 0, `the tree covers ${verifier.shape.size} bytes, the blob has ${inner.size}`, [inner.name]);
  }

  override tryReadSync(): number | undefined {
    return undefined;
  }

  override async read(buf: Uint8Array, offset: number): Promise<number> {
    const n = readable(buf, offset, this.size).length;
    if (n === 0) return 0;
    const chunk = this.verifier.chunk;
    const c0 = Math.floor(offset / chunk);
    const c1 = Math.floor((offset + n - 1) / chunk);
    const lo = c0 * chunk;
    const hi = Math.min(this.size, (c1 + 1) * chunk);
    const aligned = lo === offset && hi === offset + n;
    const work = aligned ? buf.subarray(0, n) : new Uint8Array(hi - lo);
    const tree = this.verifier.prepare(c0, c1);
    const tried = [this.#label(this.inner)];
    try {
      await readExactly(this.inner, work, lo);
    } catch (e) {
      // A proxy that breaks every answer (truncates, resets) is gone around as well.
      if (!this.#retry) throw e;
      this.stats.fallbacks++;
      tried.push(this.#label(this.#retry));
      await readExactly(this.#retry, work, lo);
    }
    await tree;
    await this.#settle(work, c0, c1, tried);
    if (!aligned) buf.set(work.subarray(offset - lo, offset - lo + n));
    return n;
  }

  /** Re-fetches the chunks of `work` that fail until they pass or the attempts run out. */
  async #settle(work: Uint8Array, c0: number, c1: number, tried: string[]): Promise<void> {
    const chunk = this.verifier.chunk;
    for (let attempt = 1; ; attempt++) {
      const bad = await this.verifier.check(work, c0);
      if (bad < 0) return;
      this.stats.failures++;
      const at = bad * chunk;
      if (attempt >= this.#attempts) throw new VerityError(this.inner.name, at, `chunk ${bad} does not match the verity tree`, tried);
      // Everything from the first bad chunk on is fetched again: one request, and later chunks are rechecked anyway.
      const src = this.#retry ?? this.inner;
      tried.push(this.#label(src));
      this.stats.refetches++;
      const rest = work.subarray((bad - c0) * chunk, Math.min(work.length, (c1 - c0 + 1) * chunk));
      const got = await src.read(rest, at);
      if (got !== rest.length) throw new ShortReadError(src.name, at, rest.length, got);
    }
  }

  #label(src: ByteSource): string {
    const via = src === this.inner ? this.#via?.inner : this.#via?.retry;
    return via ? `${src.name} (${via})` : src.name;
  }

  override async close(): Promise<void> {
    await this.#retry?.close();
    await this.verifier.close();
    await this.inner.close();
  }
}

/**
 * A chunk store whose units are checked against the tree the first time this process reads
 * them (units put here were fetched through a VerifyingSource and count as checked). A unit
 * that fails is forgotten, so the lazy source fetches it again; the synchronous path serves
 * only checked units. A check holds for the unit's bytes of the moment: when the store below
 * says they may have changed since (its generation moved: another user of a shared cache
 * entry forgot and stored the unit again), the unit is checked again.
 */
export class VerifiedStore implements ChunkStore {
  readonly inner: ChunkStore;
  readonly verifier: TreeVerifier;
  /** Per unit: the store's generation when it was checked, or -1. */
  readonly #stamp: Float64Array;
  readonly #size: number;
  readonly stats = { checked: 0, dropped: 0 };

  constructor(inner: ChunkStore, verifier: TreeVerifier) {
    this.inner = inner;
    this.verifier = verifier;
    this.#size = verifier.shape.size;
    this.#stamp = new Float64Array(Math.max(1, Math.ceil(this.#size / inner.unit))).fill(-1);
  }

  get unit(): number {
    return this.inner.unit;
  }

  get disk(): DiskChunkStore | undefined {
    return this.inner.disk;
  }

  has(i: number): boolean {
    return this.inner.has(i);
  }

  #gen(u: number): number {
    return this.inner.generation?.(u) ?? 0;
  }

  #checked(u: number): boolean {
    return this.#stamp[u] === this.#gen(u);
  }

  /** Sum of the generations of units [first, last]; generations only grow, so any change moves it. */
  #gens(first: number, last: number): number {
    let g = 0;
    for (let u = first; u <= last; u++) g += this.#gen(u);
    return g;
  }

  readHeldSync(buf: Uint8Array, offset: number): boolean | undefined {
    if (!this.inner.readHeldSync) return undefined;
    const last = Math.floor((offset + buf.length - 1) / this.unit);
    for (let u = Math.floor(offset / this.unit); u <= last; u++) if (!this.#checked(u)) return undefined;
    return this.inner.readHeldSync(buf, offset);
  }

  async readHeld(buf: Uint8Array, offset: number): Promise<boolean> {
    const first = Math.floor(offset / this.unit);
    const last = Math.floor((offset + buf.length - 1) / this.unit);
    for (let u = first; u <= last; u++) if (!this.#checked(u) && !(await this.#check(u))) return false;
    const before = this.#gens(first, last);
    // Bytes that changed while they were read are not the ones checked: the network answers.
    return (await this.inner.readHeld(buf, offset)) && this.#gens(first, last) === before;
  }

  /**
   * Reads held unit `u` whole (with the other units of its chunk when chunks are larger than
   * units) and checks it; units that fail are forgotten.
   */
  async #check(u: number): Promise<boolean> {
    const span = Math.max(this.unit, this.verifier.chunk);
    const start = Math.floor((u * this.unit) / span) * span;
    const bytes = new Uint8Array(Math.min(span, this.#size - start));
    const first = start / this.unit;
    const last = Math.ceil((start + bytes.length) / this.unit) - 1;
    const before = this.#gens(first, last);
    if (!(await this.inner.readHeld(bytes, start))) return false;
    this.stats.checked++;
    const ok = (await this.verifier.check(bytes, start / this.verifier.chunk)) < 0;
    if (this.#gens(first, last) !== before) return false;
    for (let i = first; i <= last; i++) {
      if (ok) this.#stamp[i] = this.#gen(i);
      else this.inner.forget(i);
    }
    if (!ok) this.stats.dropped++;
    return ok;
  }

  forget(i: number): void {
    this.#stamp[i] = -1;
    this.inner.forget(i);
  }

  async put(i: number, data: Uint8Array): Promise<boolean | void> {
    // A held but unchecked copy would be kept by the store instead of these checked bytes.
    if (!this.#checked(i) && this.inner.has(i)) this.inner.forget(i);
    const stored = await this.inner.put(i, data);
    if (stored === true || (stored === undefined && this.inner.has(i))) this.#stamp[i] = this.#gen(i);
    return stored;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
