/**
 * `obd import top.qcow2 DIR --chain`: one layer per image of a qcow2 backing chain, bottom
 * first, into DIR, plus DIR/manifest.json naming what was written and how to stack it.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgumentError } from '../io/errors.ts';
import { isFile } from '../io/file.ts';
import type { ByteSink } from '../io/types.ts';
import { formatSize } from '../io/util.ts';
import type { ImportStats } from '../lsmt/import.ts';
import { openQcow2Chain } from '../qcow2/chain.ts';
import { importChainLayer, planChainLayers } from '../qcow2/import.ts';
import type { ZFileWriteStats } from '../zfile/writer.ts';
import { atomicOutput, output, progressBar } from './common.ts';
import type { CompressOpts, ImportOpts } from './snapshots.ts';

export const MANIFEST = 'manifest.json';

type WriteLayer = (target: string, o: CompressOpts, write: (out: ByteSink | string) => Promise<ImportStats>) => Promise<{ layer: ImportStats; zfile?: ZFileWriteStats }>;

interface ManifestLayer {
  file: string;
  image: string;
  format: string;
  uuid: string;
  parentUuid: string;
  entries: number;
  dataBytes: number;
  fileSize: number;
  dataBlocks: number;
  zeroedBlocks: number;
  compressed: ZFileWriteStats | null;
}

export async function importChainCommand(top: string, outDir: string, o: ImportOpts, writeLayer: WriteLayer): Promise<void> {
  if (o.base?.length) throw new InvalidArgumentError('--chain writes every layer of the chain itself; --base is for a flattened delta (drop one of them)');
  if (o.dirtyBitmap !== undefined) throw new InvalidArgumentError('--dirty-bitmap reads an NBD export; --chain reads a qcow2 backing chain');
  if (o.uuid) throw new InvalidArgumentError('--chain gives each layer a new uuid; --parent sets the bottom layer\'s parent');
  const chain = await openQcow2Chain(top, { force: o.force });
  try {
    const plans = planChainLayers(chain, o.parent);
    await mkdir(outDir, { recursive: true });
    for (const f of [...plans.map((p) => p.file), MANIFEST]) {
      if (await isFile(path.join(outDir, f))) throw new InvalidArgumentError(`${path.join(outDir, f)} already exists: give an empty directory`);
    }
    const layers: ManifestLayer[] = [];
    for (const plan of plans) {
      const target = path.join(outDir, plan.file);
      const p = progressBar(`layer ${plan.index + 1}/${plans.length}`, !o.json);
      try {
        const r = await writeLayer(target, o, (sink) => importChainLayer(chain, plan, sink, { userTag: o.tag, blockSize: o.granularity, onProgress: p.onProgress }));
        const l = r.layer;
        layers.push({
          file: plan.file,
          image: plan.image.path,
          format: plan.image.format,
          uuid: l.uuid,
          parentUuid: l.parentUuid,
          entries: l.entries,
          dataBytes: l.dataBytes,
          fileSize: l.fileSize,
          dataBlocks: l.dataBlocks,
          zeroedBlocks: l.zeroedBlocks,
          compressed: r.zfile ?? null,
        });
      } finally {
        p.stop();
      }
    }
    const manifest = { source: top, virtualSize: chain.device.size, blockSize: o.granularity ?? 4096, layers };
    await atomicOutput(path.join(outDir, MANIFEST), (tmp) => writeFile(tmp, JSON.stringify(manifest, null, 2) + '\n'));
    output(o.json, { output: outDir, manifest: path.join(outDir, MANIFEST), ...manifest }, () =>
      [
        ...layers.map((l) => `${path.join(outDir, l.file)}: ${l.image} (${l.format}), ${l.entries} entries, ${formatSize(l.dataBytes)} of data${l.compressed ? `, compressed to ${formatSize(l.compressed.outputSize)}` : ''}`),
        `${path.join(outDir, MANIFEST)}: stack bottom first: ${layers.map((l) => path.join(outDir, l.file)).join(' ')}`,
      ].join('\n'),
    );
  } finally {
    await chain.device.close();
  }
}
