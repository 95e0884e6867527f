/**
 * Block codecs: LZ4 raw blocks through node-lz4 (its LZ4_compress_default output matches the
 * reference byte for byte) and one zstd frame per block through zstd-napi with reused
 * contexts. Each codec instance owns its contexts, so use one per thread.
 */
import { createRequire } from 'node:module';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import { NotSupportedError } from '../io/errors.ts';
import { CompressionError } from './errors.ts';
import { ALGO_LZ4, ALGO_ZSTD, ZSTD_DEFAULT_LEVEL } from './format.ts';

/**
 * node-lz4's native addon itself: its `encodeBlock`/`decodeBlock` are these two functions,
 * and loading the package's entry instead also loads its stream classes and xxhash (~5 ms
 * on a cold open, for nothing here).
 */
interface Lz4Binding {
  /** LZ4_compress_default into out[start, end); returns the compressed size, 0 if it does not fit. */
  compress(src: Uint8Array, out: Uint8Array, start?: number, end?: number): number;
  /** LZ4_decompress_safe into out; returns the decoded size, negative on malformed input. */
  uncompress(src: Uint8Array, out: Uint8Array): number;
}

const require = createRequire(import.meta.url);
let lz4: Lz4Binding | undefined;
let zstd: typeof ZstdBinding | undefined;

export interface BlockCodec {
  /** Compresses `src` into `out[at, at+room)`; returns the compressed size. */
  compress(src: Uint8Array, out: Uint8Array, at: number, room: number): number;
  /**
   * Decodes `src` into `out`, which has exactly the expected decoded size. Returns the decoded
   * size, or -1 when the data is malformed or does not fit.
   */
  decompress(src: Uint8Array, out: Uint8Array): number;
}

class Lz4Codec implements BlockCodec {
  readonly #lz4: Lz4Binding;
  constructor() {
    this.#lz4 = lz4 ??= require('lz4/build/Release/lz4.node') as Lz4Binding;
  }
  compress(src: Uint8Array, out: Uint8Array, at: number, room: number): number {
    const n = this.#lz4.compress(src, out, at, at + room);
    if (n <= 0) throw new CompressionError(`lz4: ${src.length} bytes did not fit in ${room}`);
    return n;
  }
  decompress(src: Uint8Array, out: Uint8Array): number {
    const n = this.#lz4.uncompress(src, out);
    return n < 0 ? -1 : n;
  }
}

class ZstdCodec implements BlockCodec {
  readonly #level: number;
  readonly #cctx: ZstdBinding.CCtx;
  readonly #dctx: ZstdBinding.DCtx;
  constructor(level: number) {
    zstd ??= require('zstd-napi/binding') as typeof ZstdBinding;
    this.#level = level;
    this.#cctx = new zstd.CCtx();
    this.#dctx = new zstd.DCtx();
  }
  compress(src: Uint8Array, out: Uint8Array, at: number, room: number): number {
    return this.#cctx.compress(out.subarray(at, at + room), src, this.#level);
  }
  decompress(src: Uint8Array, out: Uint8Array): number {
    try {
      return this.#dctx.decompress(out, src);
    } catch {
      return -1;
    }
  }
}

/** A codec for header algorithm code `algo`; `level` applies to zstd (0 = the reference's 3). */
export function createCodec(algo: number, level = 0): BlockCodec {
  if (algo === ALGO_LZ4) return new Lz4Codec();
  if (algo === ALGO_ZSTD) return new ZstdCodec(level || ZSTD_DEFAULT_LEVEL);
  throw new NotSupportedError(`no codec for algorithm ${algo}`);
}
