/**
 * One server's shared layers: images opened through the same pool (ImageOptions.pool) open
 * each layer once — one byte source, one disk-cache entry, one decoded LSMT index, one zfile
 * reader — whichever exports stack it, and reach each registry repository through one
 * client. A layer is known by its blob digest (registry and OCI-layout layers) or by the
 * device and inode of its file (local layers). Every export holds a reference on what it
 * uses; closing the export releases them, and the last release closes the layer. Decoded
 * zfile blocks of every layer draw on one memory budget, least recently used evicted first.
 *
 * So adding an export is opening an image through the pool, and removing one is closing it.
 */
import os from 'node:os';
import { FileSource } from '../io/file.ts';
import { fileBlobKey, SharedResources, sharedBlobOf } from '../io/shared.ts';
import type { ByteSource } from '../io/types.ts';
import { MemoryBudget } from '../zfile/block-cache.ts';
import type { OpenedLayer } from './open.ts';

/** The decoded-block budget when none is given: 1/8 of the host's memory, at most 1 GiB. */
export function defaultMemoryBudget(): number {
  return Math.min(2 ** 30, Math.floor(os.totalmem() / 8));
}

export interface LayerPoolOptions {
  /** Bytes of decoded zfile blocks all layers may keep together (default defaultMemoryBudget()). */
  memory?: number;
}

export class LayerPool extends SharedResources {
  readonly memory: MemoryBudget;

  constructor(opts: LayerPoolOptions = {}) {
    super();
    this.memory = new MemoryBudget(opts.memory ?? defaultMemoryBudget());
  }

  /** What the pool holds now, for metrics: open layers, clients and caches, and the block budget. */
  stats(): { layers: number; users: number; repositories: number; caches: number; memory: { capacity: number; bytes: number; blocks: number; admitted: number; evictions: number } } {
    const held = this.held();
    const count = (prefix: string) => held.filter((h) => h.key.startsWith(prefix)).length;
    const layers = held.filter((h) => h.key.startsWith('blob:') || h.key.startsWith('file:'));
    const m = this.memory;
    return {
      layers: layers.length,
      users: layers.reduce((n, h) => n + h.refs, 0),
      repositories: count('registry:') + count('oci:') + count('oci-archive:'),
      caches: count('cache:'),
      memory: { capacity: m.capacity, bytes: m.bytes, blocks: m.blocks, admitted: m.stats.admitted, evictions: m.stats.evictions },
    };
  }

  /** A handle on the local layer file at `path`, shared by device and inode. */
  async file(path: string): Promise<ByteSource> {
    return this.blob(await fileBlobKey(path), () => FileSource.open(path));
  }

  /**
   * The layer in the blob behind `handle` (from blob() or file()), decoded by `open` the
   * first time and shared after that. The layer's source belongs to the pool: the holder
   * closes `handle`, never the layer's source. A source that is no handle is opened privately.
   */
  async layer(handle: ByteSource, open: (src: ByteSource) => Promise<OpenedLayer>): Promise<OpenedLayer> {
    const blob = sharedBlobOf(handle);
    if (!blob) return open(handle);
    if (!blob.decoded) {
      const p = open(blob.source);
      blob.decoded = p;
      // A failed decode is not kept: the next export tries again.
      p.catch(() => {
        if (blob.decoded === p) blob.decoded = undefined;
      });
    }
    return (await blob.decoded) as OpenedLayer;
  }
}
