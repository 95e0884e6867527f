/**
 * `obd info`, `obd export`, `obd map`: looking at layers and stacks. Each command imports the
 * library code it runs when it runs, so registering the commands (for `obd --help`) is cheap.
 */
import type { Command } from 'commander';
import type { LayerInfo } from '../image/info.ts';
import type { OpenedLayer } from '../image/open.ts';
import { InvalidArgumentError } from '../io/errors.ts';
import { formatSize } from '../io/util.ts';
import { NO_VERIFY_CHAIN, VERIFY_CHAIN, openVerifiedStack, verifyLayers } from './chain.ts';
import { atomicOutput, output, progress } from './common.ts';
import { argList, checkOutputs, FORCE } from './outputs.ts';

export function register(program: Command): void {
  program
    .command('info')
    .description('show the header, trailer and index summary of one or more layers (several: a stack, bottom first, whose chain is checked)')
    .argument('<layer...>', 'layer files (plain LSMT, zfile-compressed or tar-wrapped)')
    .option(...VERIFY_CHAIN)
    .option(...NO_VERIFY_CHAIN)
    .option('--json', 'print JSON')
    .action(async (files: string[], opts: { json?: boolean; verifyChain?: boolean }) => {
      const { openLayerFiles } = await import('../image/open.ts');
      const { describeLayer } = await import('../image/info.ts');
      const layers = await openLayerFiles(files);
      let infos: LayerInfo[];
      try {
        verifyLayers(layers, opts.verifyChain);
        infos = layers.map((l, i) => describeLayer(l, files[i]!));
      } finally {
        await Promise.all(layers.map((l) => l.source.close()));
      }
      output(opts.json, files.length === 1 ? infos[0] : infos, () => infos.map(humanInfo).join('\n'));
    });

  program
    .command('export')
    .description('write the flattened virtual disk of a stack as a sparse raw image')
    .argument('<files...>', 'layer files, bottom first, then the raw image to write')
    .option(...VERIFY_CHAIN)
    .option(...NO_VERIFY_CHAIN)
    .option(...FORCE)
    .option('--json', 'print JSON')
    .action(async (files: string[], opts: { json?: boolean; verifyChain?: boolean; force?: boolean }) => {
      const all = [...files];
      const target = all.pop()!;
      if (all.length === 0) throw new InvalidArgumentError('give at least one layer and then the output file');
      await checkOutputs([{ path: target, arg: '<output>' }], argList(all, 'layer'), opts.force);
      const { exportRaw } = await import('../image/export.ts');
      const stack = await openVerifiedStack(all, opts.verifyChain);
      try {
        const bar = progress('export', stack.size, !opts.json);
        const stats = await atomicOutput(target, (tmp) => exportRaw(stack, tmp, (d) => bar.update(d)));
        bar.stop();
        output(opts.json, { output: target, layers: all.length, ...stats }, () =>
          `${target}: ${formatSize(stats.size)} virtual disk from ${all.length} layer(s), ${formatSize(stats.written)} of data written`,
        );
      } finally {
        await stack.close();
      }
    });

  program
    .command('map')
    .description('list the extents of a stack: data, zeroed or hole, and the layer backing each')
    .argument('<layer...>', 'layer files, bottom first')
    .option(...VERIFY_CHAIN)
    .option(...NO_VERIFY_CHAIN)
    .option('--json', "print qemu-img map's JSON: start, length, depth (1 = top layer, 0 = none), present, zero, data, offset")
    .addHelpText('after', '\nExamples:\n  obd map base.lsmt app.lsmt\n  obd map --json base.lsmt app.lsmt | jq \'.[] | select(.depth == 1)\'     # what the top layer holds\n')
    .action(async (files: string[], opts: { json?: boolean; verifyChain?: boolean }) => {
      const stack = await openVerifiedStack(files, opts.verifyChain);
      try {
        if (opts.json) {
          const { stackMap } = await import('../image/map.ts');
          const plain = stack.layers.map((l) => (l as OpenedLayer).wrapping.length === 1);
          process.stdout.write(JSON.stringify(stackMap(stack, plain)) + '\n');
          return;
        }
        const exts = await stack.extents(0, stack.size);
        const rows = exts.map(
          (e) => `${String(e.offset).padStart(14)} ${String(e.length).padStart(14)}  ${e.kind.padEnd(4)}  ${e.layer < 0 ? '-' : `${e.layer} ${files[e.layer]}`}`,
        );
        process.stdout.write([`${'offset'.padStart(14)} ${'length'.padStart(14)}  kind  layer`, ...rows].join('\n') + '\n');
      } finally {
        await stack.close();
      }
    });
}

function humanInfo(i: LayerInfo): string {
  return [
    `${i.file}:`,
    `  format          ${i.wrapping.join(' > ')}`,
    `  virtual size    ${formatSize(i.virtualSize)} (${i.virtualSize} bytes)`,
    `  uuid            ${i.uuid}`,
    `  parent uuid     ${i.parentUuid}`,
    `  version         ${i.trailer.version}`,
    `  user tag        ${i.userTag === '' ? '(none)' : JSON.stringify(i.userTag)}`,
    `  entries         ${i.entries} (${i.dataEntries} data, ${i.zeroedEntries} zeroed; ${i.indexEntriesOnDisk} on disk with padding)`,
    `  data            ${formatSize(i.dataBytes)} stored, ${formatSize(i.mappedBytes)} of the disk mapped`,
    `  index           ${formatSize(i.indexBytes)} at offset ${i.trailer.indexOffset}`,
    `  header flags    ${i.header.flags} (${i.header.flagNames.join(', ')})`,
    `  trailer flags   ${i.trailer.flags} (${i.trailer.flagNames.join(', ')})`,
    `  file size       ${formatSize(i.storedBytes)}${i.storedBytes !== i.layerBytes ? ` (${formatSize(i.layerBytes)} decoded, ${((100 * i.storedBytes) / i.layerBytes).toFixed(1)} %)` : ''}`,
  ].join('\n');
}
