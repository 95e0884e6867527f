/**
 * Commit: sealing a writable layer into a committed layer (docs/format.md §2.5). Only live
 * data is kept (overwritten and trimmed bytes are dropped), copied in logical order; the
 * identity comes from the data-file header unless the caller overrides it, and — as
 * overlaybd-commit — the uuid is the null uuid unless one is given.
 */
import type { ByteSink } from '../io/types.ts';
import { copyMappings, withSink, type ProgressFn } from './copy.ts';
import { checkedIdentity } from './identity.ts';
import { WritableLayer } from './writable.ts';
import { SealedLayerWriter, type LayerWriteStats } from './writer.ts';

export interface CommitOptions {
  /** Uuid of the committed layer; default the null uuid (as overlaybd-commit). */
  uuid?: string;
  /** Default: the data file's parent uuid; '' writes none. */
  parentUuid?: string;
  /** Commit message, at most 256 bytes. */
  userTag?: string;
  /** Called as data is copied, with (bytes done, total data bytes). */
  onProgress?: ProgressFn;
}

export interface CommitStats extends LayerWriteStats {
  virtualSize: number;
  uuid: string;
  parentUuid: string;
}

/**
 * Commits the writable pair at dataPath/indexPath into `out`: a path (written, synced and
 * closed; removed on failure) or a sink the caller finishes (e.g. a ZFileWriter).
 */
export async function commitLayer(dataPath: string, indexPath: string, out: ByteSink | string, opts: CommitOptions = {}): Promise<CommitStats> {
  const layer = await WritableLayer.open(dataPath, indexPath, { readOnly: true });
  try {
    return await commitWritable(layer, out, opts);
  } finally {
    await layer.close();
  }
}

/** Commits an open writable layer as it is now (completed writes; no flush needed). */
export async function commitWritable(layer: WritableLayer, out: ByteSink | string, opts: CommitOptions = {}): Promise<CommitStats> {
  const id = checkedIdentity({
    virtualSize: layer.dataHeader.virtualSize,
    uuid: opts.uuid,
    parentUuid: opts.parentUuid ?? layer.dataHeader.parentUuid,
    userTag: opts.userTag,
  });
  // No compaction may swap the files while their table is being copied.
  const stats = await layer.stable(() =>
    withSink(out, async (sink) => {
      const w = new SealedLayerWriter(sink, id);
      await copyMappings(layer.indexTable(), [layer.dataSource], w, () => 0, opts.onProgress);
      return w.finish();
    }),
  );
  return { ...stats, virtualSize: id.virtualSize, uuid: id.uuid!, parentUuid: id.parentUuid! };
}
