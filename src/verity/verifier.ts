/**
 * Checking a blob's chunks against its verity tree (docs/format.md §7.3) while fetching
 * only the tree pages a read needs: one 4 KiB page per page level, fetched by Range from
 * the tree blob in parallel with the data, verified up to the trusted root and kept.
 */
import { timingSafeEqual } from 'node:crypto';
import { NotFoundError, ShortReadError } from '../io/errors.ts';
import type { ByteSource } from '../io/types.ts';
import { VerityError, VerityMissingError } from './errors.ts';
import { hashUp, HASH, leafHash, PAGE_NODES, TreeShape } from './tree.ts';

export interface TreeParams {
  root: Uint8Array;
  chunk: number;
  size: number;
}

export interface TreeVerifierOptions {
  /** Where a page that failed is fetched again (the same tree blob, bypassing a proxy). */
  retry?: ByteSource;
  /** Fetches of one page before the failure stands (default 3). */
  attempts?: number;
}

/** Reads `buf.length` bytes at `offset` or throws. */
export async function readExactly(src: ByteSource, buf: Uint8Array, offset: number): Promise<void> {
  const got = await src.read(buf, offset);
  if (got !== buf.length) throw new ShortReadError(src.name, offset, buf.length, got);
}

export class TreeVerifier {
  readonly shape: TreeShape;
  readonly root: Uint8Array;
  readonly tree: ByteSource;
  readonly #retry: ByteSource | undefined;
  readonly #attempts: number;
  /** Verified pages per page group, by page number. */
  readonly #pages: Array<Map<number, Promise<Uint8Array>>>;
  readonly #scratch = new Uint8Array(HASH);
  /** Tree bytes fetched (for tests and benchmarks). */
  readonly stats = { pageFetches: 0, bytes: 0 };

  constructor(params: TreeParams, tree: ByteSource, opts: TreeVerifierOptions = {}) {
    this.shape = new TreeShape(params.size, params.chunk);
    this.root = params.root;
    this.tree = tree;
    this.#retry = opts.retry;
    this.#attempts = Math.max(1, opts.attempts ?? 3);
    this.#pages = Array.from({ length: this.shape.pageGroups }, () => new Map());
    if (tree.size !== this.shape.bytes) throw new VerityError(tree.name, 0, `tree blob has ${tree.size} bytes, a ${params.size}-byte blob in ${params.chunk}-byte chunks needs ${this.shape.bytes}`, [tree.name]);
  }

  get chunk(): number {
    return this.shape.chunk;
  }

  async close(): Promise<void> {
    await this.#retry?.close();
    await this.tree.close();
  }

  /** The verified leaf page holding chunk `c`'s hash (at `(c % 128) · 32`). */
  leafPage(c: number): Promise<Uint8Array> {
    return this.#page(0, Math.floor(c / PAGE_NODES));
  }

  /** Starts fetching what chunks [c0, c1] need, so the wait overlaps the data fetch. */
  prepare(c0: number, c1: number): Promise<void> {
    const parts: Promise<Uint8Array>[] = [];
    for (let p = Math.floor(c0 / PAGE_NODES); p <= Math.floor(c1 / PAGE_NODES); p++) parts.push(this.#page(0, p));
    const all = Promise.all(parts).then(() => {});
    all.catch(() => {});
    return all;
  }

  /**
   * Checks `data`, the blob's bytes from chunk `c0` on (whole chunks, the last one short only
   * at the blob's end). Resolves the index of the first chunk that does not match, or -1.
   */
  async check(data: Uint8Array, c0: number): Promise<number> {
    const chunk = this.shape.chunk;
    const n = Math.ceil(data.length / chunk);
    for (let i = 0; i < n; i++) {
      const c = c0 + i;
      const page = await this.leafPage(c);
      leafHash(data.subarray(i * chunk, Math.min(data.length, (i + 1) * chunk)), this.#scratch);
      const at = (c % PAGE_NODES) * HASH;
      if (!timingSafeEqual(this.#scratch, page.subarray(at, at + HASH))) return c;
    }
    return -1;
  }

  /** Page `p` of group `g`, verified against its parent page (or the root), fetched once. */
  #page(g: number, p: number): Promise<Uint8Array> {
    const pages = this.#pages[g]!;
    let got = pages.get(p);
    if (!got) {
      got = this.#loadPage(g, p);
      pages.set(p, got);
      got.catch(() => {
        if (pages.get(p) === got) pages.delete(p);
      });
    }
    return got;
  }

  async #loadPage(g: number, p: number): Promise<Uint8Array> {
    const top = g + 1 === this.#pages.length;
    // The parent is asked for first so its fetch runs alongside this page's.
    const parent = top ? undefined : this.#page(g + 1, Math.floor(p / PAGE_NODES));
    parent?.catch(() => {});
    const { offset, length } = this.shape.page(g, p);
    const tried: string[] = [];
    for (let attempt = 0; attempt < this.#attempts; attempt++) {
      const src = attempt > 0 && this.#retry ? this.#retry : this.tree;
      tried.push(src.name);
      const bytes = new Uint8Array(length);
      await readExactly(src, bytes, offset).catch((e: unknown) => {
        if (!(e instanceof NotFoundError)) throw e;
        throw new VerityMissingError(`${this.tree.name}: the layer's verity tree is missing (an image copied without its trees? \`obd copy\` carries them; skopeo copies no referrers)`, { cause: e });
      });
      this.stats.pageFetches++;
      this.stats.bytes += length;
      const sum = hashUp(bytes);
      let want: Uint8Array;
      if (parent) {
        const at = (p % PAGE_NODES) * HASH;
        want = (await parent).subarray(at, at + HASH);
      } else want = this.root;
      if (timingSafeEqual(sum, want)) return bytes;
    }
    throw new VerityError(this.tree.name, offset, `verity tree page ${g}/${p} does not hash to ${top ? 'the root' : 'its parent'}`, tried);
  }
}

