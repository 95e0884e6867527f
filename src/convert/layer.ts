/**
 * Converting one layer: a writable LSMT layer over the layers converted so far, the engine
 * applies the tar onto it (formatting the filesystem for the bottom layer), and the layer is
 * committed exactly as `obd commit -z -t` commits (zfile with CRCs, header rewritten,
 * tar-wrapped) with the chainID's uuid and the layer below's as parent.
 * The writable layer is append-only, not sparse: its index records every write to the
 * sector, so the commit holds only the sectors this layer wrote (a sparse layer would keep
 * whole 4 KiB blocks).
 */
import { rm } from 'node:fs/promises';
import type { BlockDevice } from '../io/types.ts';
import { commitWritable } from '../lsmt/commit.ts';
import { WritableLayer } from '../lsmt/writable.ts';
import { ZFileWriter } from '../zfile/writer.ts';
import type { EngineStats, LayerEngine } from './engine.ts';
import type { FsIdentity } from './identity.ts';

export interface BuildOptions {
  engine: LayerEngine;
  /** The uncompressed tar of the layer. */
  tar: AsyncIterable<Uint8Array>;
  /** Names the layer in messages. */
  name: string;
  /** Where the writable layer's two files go (removed afterwards). */
  work: string;
  /** The committed blob to write. */
  out: string;
  vsize: number;
  uuid: string;
  /** '' for the bottom layer. */
  parentUuid: string;
  /** The layers below, read-only; absent for the bottom layer (which formats `fs`). */
  lower: BlockDevice | undefined;
  fs: FsIdentity | undefined;
  algorithm: 'lz4' | 'zstd';
  blockSize: number;
  threads: number;
}

export interface BuiltLayer {
  engine: EngineStats;
  /** Bytes of the committed LSMT layer (before compression) and of the blob. */
  lsmtBytes: number;
  blobBytes: number;
}

export async function buildLayer(o: BuildOptions): Promise<BuiltLayer> {
  const data = `${o.work}.data`;
  const index = `${o.work}.index`;
  const layer = await WritableLayer.create(data, index, { virtualSize: o.lower ? 0 : o.vsize, uuid: o.uuid, parentUuid: o.parentUuid, lower: o.lower, ownsLower: false });
  try {
    const engine = await o.engine.apply(layer, o.tar, { format: o.lower ? undefined : o.fs, name: o.name });
    const zw = await ZFileWriter.create(o.out, { algorithm: o.algorithm, blockSize: o.blockSize, threads: o.threads, tar: true, crc: true, overwriteHeader: true });
    try {
      const commit = await commitWritable(layer, zw, { uuid: o.uuid, parentUuid: o.parentUuid });
      const z = await zw.finish();
      return { engine, lsmtBytes: commit.fileSize, blobBytes: z.outputSize };
    } catch (e) {
      await zw.abort();
      throw e;
    }
  } finally {
    await layer.close();
    await rm(data, { force: true });
    await rm(index, { force: true });
  }
}
