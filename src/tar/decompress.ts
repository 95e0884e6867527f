/**
 * Layer blobs as tar bytes: gzip (every member of a multi-member file), zstd (every frame) or
 * plain, told apart by magic. gzip goes through node:zlib's streaming gunzip; zstd through
 * zstd-napi's ZSTD_decompressStream with a fresh output buffer per piece (the tar reader hands
 * views of these pieces to its consumer, so they are never reused). Corrupt or truncated input
 * is a TarDecompressError naming the compressed offset where known.
 */
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import { TarDecompressError } from './errors.ts';

const require = createRequire(import.meta.url);
let zstd: typeof ZstdBinding | undefined;

export type Compression = 'gzip' | 'zstd' | 'none';

/** Output pieces of this size: large enough that per-piece costs vanish, small enough to stay in cache. */
const OUT_CHUNK = 256 << 10;

export function detectCompression(head: Uint8Array): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  return 'none';
}

/** Detects gzip (1f 8b), zstd (28 b5 2f fd) or plain by magic and yields the tar bytes. */
export async function* decompressed(input: AsyncIterable<Uint8Array>, opts: { name?: string } = {}): AsyncGenerator<Uint8Array, void, undefined> {
  const name = opts.name ?? 'layer';
  const it = input[Symbol.asyncIterator]();
  // Gather the first 4 bytes (chunks may be as small as one byte).
  const head: Uint8Array[] = [];
  let have = 0;
  let ended = false;
  while (have < 4) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    if (r.value.length === 0) continue;
    head.push(r.value);
    have += r.value.length;
  }
  const magic = Buffer.concat(head, have).subarray(0, 4);
  const rest: AsyncIterable<Uint8Array> = {
    [Symbol.asyncIterator]: () => replay(head, ended ? undefined : it),
  };
  const kind = detectCompression(magic);
  if (kind === 'none') yield* rest;
  else if (kind === 'gzip') yield* gunzip(rest, name);
  else yield* unzstd(rest, name);
}

async function* replay(head: Uint8Array[], it: AsyncIterator<Uint8Array> | undefined): AsyncGenerator<Uint8Array> {
  yield* head;
  if (!it) return;
  try {
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  } finally {
    await it.return?.();
  }
}

async function* gunzip(input: AsyncIterable<Uint8Array>, name: string): AsyncGenerator<Uint8Array> {
  const z = createGunzip({ chunkSize: OUT_CHUNK });
  const src = Readable.from(input, { objectMode: false });
  src.on('error', (e) => z.destroy(e));
  src.pipe(z);
  try {
    for await (const c of z) yield c as Buffer;
  } catch (e) {
    if (e instanceof Error && 'errno' in e && (e as NodeJS.ErrnoException).code?.startsWith('Z_')) {
      throw new TarDecompressError(name, z.bytesWritten, `gzip: ${e.message}`, { cause: e });
    }
    throw e;
  } finally {
    src.destroy();
    z.destroy();
  }
}

async function* unzstd(input: AsyncIterable<Uint8Array>, name: string): AsyncGenerator<Uint8Array> {
  zstd ??= require('zstd-napi/binding') as typeof ZstdBinding;
  const dctx = new zstd.DCtx();
  let inOffset = 0;
  // 0 once a frame has ended exactly at the end of what was given; else the frame is open.
  let frameOpen = false;
  for await (const chunk of input) {
    let src = chunk;
    while (src.length > 0) {
      const out = new Uint8Array(OUT_CHUNK);
      let ret: number;
      let produced: number;
      let consumed: number;
      try {
        [ret, produced, consumed] = dctx.decompressStream(out, src);
      } catch (e) {
        throw new TarDecompressError(name, inOffset, `zstd: ${(e as Error).message}`, { cause: e });
      }
      src = src.subarray(consumed);
      inOffset += consumed;
      frameOpen = ret !== 0;
      if (produced > 0) yield out.subarray(0, produced);
      // The output was full: more may be pending inside the context even with no input left.
      while (src.length === 0 && produced === OUT_CHUNK) {
        const more = new Uint8Array(OUT_CHUNK);
        [ret, produced] = dctx.decompressStream(more, src);
        frameOpen = ret !== 0;
        if (produced > 0) yield more.subarray(0, produced);
      }
    }
  }
  if (frameOpen) throw new TarDecompressError(name, inOffset, 'zstd: truncated (the input ends inside a frame)');
}
