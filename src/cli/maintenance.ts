/**
 * `obd compact DATA INDEX` and `obd resize DATA INDEX --size S`: offline maintenance of a
 * writable layer (the same WritableLayer.compact / resize a live server runs through its
 * control API). Both take the layer's writer lock, so they refuse a layer a server has open.
 */
import type { Command } from 'commander';
import { InvalidArgumentError } from '../io/errors.ts';
import { formatSize } from '../io/util.ts';
import { WritableLayer } from '../lsmt/writable.ts';
import { output, progressBar, sizeArg } from './common.ts';

export async function compactFiles(data: string, index: string, o: { json?: boolean }): Promise<void> {
  const layer = await WritableLayer.open(data, index);
  const p = progressBar('compact', !o.json);
  try {
    const live = layer.stats().liveDataBytes;
    const r = await layer.compact({ onProgress: p.onProgress });
    p.stop();
    output(o.json, { data, index, liveDataBytes: live, ...r }, () =>
      `${data}: ${formatSize(r.dataBytesBefore)} → ${formatSize(r.dataBytesAfter)} (${formatSize(r.reclaimed)} reclaimed; ${r.entries} live entries, ${formatSize(live)} of live data)`,
    );
  } finally {
    p.stop();
    await layer.close();
  }
}

export async function resizeFiles(data: string, index: string, o: { size: number; shrink?: boolean; json?: boolean }): Promise<void> {
  const layer = await WritableLayer.open(data, index);
  try {
    const before = layer.size;
    await layer.resize(o.size, { shrink: o.shrink });
    output(o.json, { data, index, before, after: layer.size }, () => `${data}: virtual size ${formatSize(before)} → ${formatSize(layer.size)}`);
  } finally {
    await layer.close();
  }
}

export function register(program: Command): void {
  program
    .command('compact')
    .description('rewrite a writable layer into new files holding only its live data (the files are swapped atomically; a crash leaves the old or the new pair)')
    .argument('<data>', 'writable layer data file')
    .argument('<index>', 'writable layer index file')
    .option('--json', 'print JSON')
    .addHelpText('after', '\nExample:\n  obd compact rw.data rw.index      # reports the bytes reclaimed\n')
    .action((data: string, index: string, o: { json?: boolean }) => compactFiles(data, index, o));

  program
    .command('resize')
    .description('change the virtual size of a writable layer, durably')
    .argument('<data>', 'writable layer data file')
    .argument('<index>', 'writable layer index file')
    .option('--size <size>', 'new virtual size (K/M/G/T suffixes), a multiple of 512', sizeArg)
    .option('--shrink', 'allow a smaller size (refused if anything is mapped past the new end)')
    .option('--json', 'print JSON')
    .addHelpText('after', '\nExamples:\n  obd resize rw.data rw.index --size 20G\n  obd resize rw.data rw.index --size 1G --shrink\n')
    .action((data: string, index: string, o: { size?: number; shrink?: boolean; json?: boolean }) => {
      if (o.size === undefined) throw new InvalidArgumentError('give the new size with --size');
      return resizeFiles(data, index, { ...o, size: o.size });
    });
}
