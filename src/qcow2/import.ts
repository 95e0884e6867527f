/**
 * qcow2 images in: flattened through the backing chain into one layer, or one layer per
 * image of the chain, bottom first, each holding exactly what that image stores (its data
 * clusters, and its zero clusters as zeroed extents that hide the layers below), uuids
 * chained parent → child, so the stack reads as the top image.
 */
import path from 'node:path';
import type { ByteSink, Extent } from '../io/types.ts';
import { importDevice, type ImportOptions, type ImportStats } from '../lsmt/import.ts';
import { randomUuid, SECTOR } from '../lsmt/format.ts';
import type { ChainImage, Qcow2Chain } from './chain.ts';

/** Flattens the chain into one layer of its allocated non-zero data (or a delta over `base`). */
export function importQcow2(chain: Qcow2Chain, out: ByteSink | string, opts: ImportOptions = {}): Promise<ImportStats> {
  return importDevice(chain.device, out, opts);
}

/** What image `i` itself stores, as seen through the top image of `size` bytes. */
async function* ownPlan(img: ChainImage, i: number, size: number): AsyncIterable<Extent> {
  const own = Math.min(img.device.size, size);
  if (img.format === 'qcow2') {
    // Holes are what the image leaves to the ones below: not part of its layer.
    for (let at = 0; at < own; at += 1 << 30) for (const e of await img.device.ownExtents(at, Math.min(1 << 30, own - at))) if (e.kind !== 'hole') yield e;
  } else if (own > 0) {
    yield { offset: 0, length: own, kind: 'data', layer: i };
  }
  // An image smaller than the top one reads zeros past its end, hiding any larger image below.
  if (i > 0 && own < size) yield { offset: own, length: size - own, kind: 'zero', layer: i };
}

export interface ChainLayerPlan {
  image: ChainImage;
  /** Position in the chain, bottom = 0. */
  index: number;
  /** Output file name: the index, then the image's name. */
  file: string;
  uuid: string;
  parentUuid: string;
}

/**
 * Names and uuids of the layers for each image of `chain`, bottom first. The bottom
 * layer's parent is `parentUuid` (default none).
 */
export function planChainLayers(chain: Qcow2Chain, parentUuid = ''): ChainLayerPlan[] {
  const width = String(chain.images.length - 1).length;
  let parent = parentUuid;
  return chain.images.map((image, index) => {
    const uuid = randomUuid();
    const p = { image, index, file: `${String(index).padStart(width, '0')}-${path.basename(image.path).replace(/\.(qcow2?|img|raw)$/i, '')}.lsmt`, uuid, parentUuid: parent };
    parent = uuid;
    return p;
  });
}

/** Writes the layer of one chain image (see planChainLayers) into `out`. */
export function importChainLayer(chain: Qcow2Chain, layer: ChainLayerPlan, out: ByteSink | string, opts: Pick<ImportOptions, 'userTag' | 'onProgress' | 'blockSize'> = {}): Promise<ImportStats> {
  const size = Math.ceil(chain.device.size / SECTOR) * SECTOR;
  const qcow2 = layer.image.format === 'qcow2';
  return importDevice(layer.image.device, out, {
    ...opts,
    uuid: layer.uuid,
    parentUuid: layer.parentUuid,
    virtualSize: size,
    plan: ownPlan(layer.image, layer.index, size),
    // A raw bottom image "allocates" everything: keep only its non-zero blocks.
    keepZeros: qcow2,
  });
}
