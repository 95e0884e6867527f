/**
 * Merge / flatten: one sealed layer whose reads equal a whole stack's (docs/format.md §2.8).
 * The stack's merged index is compacted as a commit would: virtual size from the top
 * layer's header, parent uuid from the bottom layer's header, null uuid unless given, and
 * each entry tagged with its source layer's position counted from the top.
 */
import type { ByteSink } from '../io/types.ts';
import { copyMappings, withSink, type ProgressFn } from './copy.ts';
import { checkedIdentity } from './identity.ts';
import type { SealedLayer } from './sealed.ts';
import type { Layer } from './layer.ts';
import { Stack } from './stack.ts';
import { SealedLayerWriter, type LayerWriteStats } from './writer.ts';

export interface FlattenOptions {
  /** Default the null uuid (as overlaybd-merge). */
  uuid?: string;
  /** Default the bottom layer's parent uuid; '' writes none. */
  parentUuid?: string;
  userTag?: string;
  onProgress?: ProgressFn;
}

export interface FlattenStats extends LayerWriteStats {
  virtualSize: number;
  uuid: string;
  parentUuid: string;
  /** Layers merged. */
  layers: number;
}

/** The reference takes the size from a layer's header; a layer from elsewhere has only its own. */
function headerOf(l: Layer): { virtualSize: number } {
  return (l as Partial<SealedLayer>).header ?? l;
}

/**
 * Writes the flattened `input` (a Stack, or sealed layers bottom → top) into `out`: a path
 * (synced; removed on failure) or a sink the caller finishes. Sources stay open.
 */
export async function flattenStack(input: Stack | readonly Layer[], out: ByteSink | string, opts: FlattenOptions = {}): Promise<FlattenStats> {
  const stack = input instanceof Stack ? input : new Stack(input, { ownsSources: false });
  const layers = stack.layers;
  const n = layers.length;
  const top = layers[n - 1]!;
  const id = checkedIdentity({
    // The reference reads the top header; a zero there would make an unusable layer.
    virtualSize: headerOf(top).virtualSize || stack.size,
    uuid: opts.uuid,
    parentUuid: opts.parentUuid ?? layers[0]!.parentUuid,
    userTag: opts.userTag,
  });
  const sources = layers.map((l) => l.source);
  const stats = await withSink(out, async (sink) => {
    const w = new SealedLayerWriter(sink, id);
    await copyMappings(stack.index, sources, w, (layer) => (n - 1 - layer) & 0xff, opts.onProgress);
    return w.finish();
  });
  return { ...stats, virtualSize: id.virtualSize, uuid: id.uuid!, parentUuid: id.parentUuid!, layers: n };
}
