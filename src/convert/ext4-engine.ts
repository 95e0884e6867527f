/** The layer engine: our ext4 writer (src/ext4) driven by the OCI layer semantics of apply.ts. */
import { Ext4 } from '../ext4/fs.ts';
import { readTar } from '../tar/reader.ts';
import { applyLayer } from './apply.ts';
import type { LayerEngine } from './engine.ts';

export const ext4Engine: LayerEngine = {
  version: 'ext4/2',
  async apply(dev, tar, opts) {
    const fs = opts.format ? await Ext4.format(dev, { uuid: opts.format.uuid, hashSeed: opts.format.hashSeed }) : await Ext4.open(dev);
    const applied = await applyLayer(fs, readTar(tar, { name: opts.name }), { name: opts.name });
    await fs.flush();
    // One Ext4 per layer: its stats are what this layer wrote.
    return { ...applied, dataBytes: fs.stats.dataBytes, metadataBytes: fs.stats.metadataBytes };
  },
};
