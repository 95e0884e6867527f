/** Building sealed layers in memory for tests, and digesting devices. */
import { sha256Device } from '../../src/image/export.ts';
import type { BlockDevice } from '../../src/io/types.ts';
import { MemorySink, MemorySource } from '../../src/io/memory.ts';
import { SECTOR } from '../../src/lsmt/format.ts';
import { openSealedLayer, type SealedLayer } from '../../src/lsmt/sealed.ts';
import { SealedLayerWriter, type ExtentSpec, type LayerIdentity } from '../../src/lsmt/writer.ts';

/** Writes a sealed layer from byte extents into memory and returns its bytes. */
export async function buildLayerBytes(id: LayerIdentity, extents: ExtentSpec[]): Promise<Uint8Array> {
  const sink = new MemorySink('test-layer');
  const w = new SealedLayerWriter(sink, id);
  for (const e of [...extents].sort((a, b) => a.offset - b.offset)) {
    if ('data' in e) await w.addData(e.offset / SECTOR, e.data);
    else await w.addZeroed(e.offset / SECTOR, e.zeroLength / SECTOR);
  }
  await w.finish();
  return sink.bytes();
}

/** Builds and opens a sealed layer held in memory. */
export async function buildLayer(id: LayerIdentity, extents: ExtentSpec[], name = 'mem-layer'): Promise<SealedLayer> {
  return openSealedLayer(new MemorySource(await buildLayerBytes(id, extents), name));
}

/** sha256 of a device's whole contents, read in `chunk`-sized pieces. */
export function deviceDigest(dev: BlockDevice, chunk = 1 << 20): Promise<string> {
  return sha256Device(dev, chunk);
}
