/**
 * Compressed clusters (docs/qcow2.md): raw deflate for zlib
 * images, one zstd frame for zstd images. The stored span is rounded up to 512-byte
 * sectors and may end in the start of the next compressed cluster, so decoding must stop
 * at the end of its own stream. The last decoded cluster is kept: readers ask for pieces of
 * one cluster in turn.
 */
import { createRequire } from 'node:module';
import { inflateRawSync } from 'node:zlib';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import { ChecksumError } from '../io/errors.ts';
import type { ByteSource } from '../io/types.ts';
import { readAt } from '../io/util.ts';
import type { CompressionType } from './header.ts';

const require = createRequire(import.meta.url);
let zstd: typeof ZstdBinding | undefined;

export class ClusterDecoder {
  readonly #src: ByteSource;
  readonly #type: CompressionType;
  readonly #clusterSize: number;
  #dctx: ZstdBinding.DCtx | undefined;
  #cachedAt = -1;
  #cached: Uint8Array;

  constructor(src: ByteSource, type: CompressionType, clusterSize: number) {
    this.#src = src;
    this.#type = type;
    this.#clusterSize = clusterSize;
    this.#cached = new Uint8Array(clusterSize);
  }

  /**
   * Copies decoded bytes [at, at+dst.length) of the cluster whose compressed stream starts
   * at `host` and spans at most `bytes` into `dst`. Decoding and copying happen without a
   * pause in between, so concurrent reads never see each other's cluster in the cache.
   */
  async read(host: number, bytes: number, dst: Uint8Array, at: number): Promise<void> {
    if (host !== this.#cachedAt) {
      const stored = await readAt(this.#src, host, bytes);
      if (host !== this.#cachedAt) this.#decode(stored, host, bytes);
    }
    dst.set(this.#cached.subarray(at, at + dst.length));
  }

  #decode(stored: Uint8Array, host: number, bytes: number): void {
    this.#cachedAt = -1;
    const fail = (why: string, cause?: unknown) =>
      new ChecksumError(this.#src.name, host, `compressed cluster (${this.#type}, ${bytes} bytes stored) does not decode to ${this.#clusterSize} bytes: ${why}`, { cause });
    if (this.#type === 'zlib') {
      let out: Buffer;
      try {
        // qemu accepts a stream that fills the cluster even without its end marker.
        out = inflateRawSync(stored, { maxOutputLength: this.#clusterSize, finishFlush: 2 /* Z_SYNC_FLUSH */ });
      } catch (e) {
        throw fail((e as Error).message, e);
      }
      if (out.length !== this.#clusterSize) throw fail(`got ${out.length} bytes`);
      this.#cached.set(out);
    } else {
      zstd ??= require('zstd-napi/binding') as typeof ZstdBinding;
      this.#dctx ??= new zstd.DCtx();
      let n: number;
      try {
        const frame = zstd.findFrameCompressedSize(stored);
        n = this.#dctx.decompress(this.#cached, stored.subarray(0, frame));
      } catch (e) {
        throw fail((e as Error).message, e);
      }
      if (n !== this.#clusterSize) throw fail(`got ${n} bytes`);
    }
    this.#cachedAt = host;
  }
}
