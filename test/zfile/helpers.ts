/** Shared by the zfile tests: fixture paths, opening (tar-wrapped) zfiles. */
import path from 'node:path';
import { FileSource } from '../../src/io/file.ts';
import { MemorySource } from '../../src/io/memory.ts';
import type { ByteSource } from '../../src/io/types.ts';
import { openTarEntry } from '../../src/zfile/tar.ts';
import { ZFileReader, type ZFileReaderOptions } from '../../src/zfile/reader.ts';
import { FIXTURES } from '../helpers/recipes.ts';

export const ZFIXTURES = path.join(FIXTURES, 'zfile');

/** The zfile fixtures: name → [algorithm, block size, CRC, decodes to]. */
export const ZFILE_FIXTURES = {
  'zinput-8m.lz4-bs4.zfile': ['lz4', 4096, true, 'zinput8m'],
  'zinput-8m.zstd-bs32.zfile': ['zstd', 32768, true, 'zinput8m'],
  'zinput-8m.lz4-bs4-nocrc.zfile': ['lz4', 4096, false, 'zinput8m'],
  'zinput-odd.zstd-bs16.zfile': ['zstd', 16384, true, 'zinputOdd'],
  'zinput-8m.zstd-bs8.zfile.tar': ['zstd', 8192, true, 'zinput8m'],
} as const;

/** Opens a zfile from a path or bytes, peeling a tar wrapper. */
export async function openZ(from: string | Uint8Array, opts?: ZFileReaderOptions): Promise<ZFileReader> {
  const src: ByteSource = typeof from === 'string' ? await FileSource.open(from) : new MemorySource(from, 'mem.zfile');
  try {
    return await ZFileReader.open((await openTarEntry(src)) ?? src, opts);
  } catch (e) {
    await src.close();
    throw e;
  }
}

export async function readAll(r: ByteSource): Promise<Buffer> {
  const buf = Buffer.alloc(r.size);
  const n = await r.read(buf, 0);
  if (n !== r.size) throw new Error(`short read ${n} of ${r.size}`);
  return buf;
}

/** A memory source whose reads complete after a random number of event-loop turns. */
export class SlowSource extends MemorySource {
  reads = 0;
  /** A slow (remote-like) source never answers synchronously. */
  override tryReadSync(): undefined {
    return undefined;
  }
  override async read(buf: Uint8Array, offset: number): Promise<number> {
    this.reads++;
    const turns = Math.floor(Math.random() * 4);
    for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
    return super.read(buf, offset);
  }
}
