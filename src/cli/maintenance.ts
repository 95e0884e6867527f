/**
 * `obd compact DATA INDEX` and `obd resize DATA INDEX --size S` (registered with their live
 * forms in live.ts): offline maintenance of a writable layer, the same WritableLayer.compact /
 * resize a live server runs through its control API. Both take the layer's writer lock, so
 * they refuse a layer a server has open.
 * `obd diff --from A --to B OUT`: the layer that turns image A into image B.
 */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { InvalidArgumentError } from '../io/errors.ts';
import type { BlockDevice } from '../io/types.ts';
import { formatSize } from '../io/util.ts';
import { NO_VERIFY_CHAIN, VERIFY_CHAIN, warn, withChainHint } from './chain.ts';
import { output, progressBar, sizeArg } from './common.ts';
import { argList, checkOutputs, FORCE } from './outputs.ts';
import { compressOptions, writeLayerOutput, type CompressOpts } from './snapshots.ts';

/** Collects a repeatable option whose values may also be comma-separated lists. */
function collect(value: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), ...value.split(',').filter((v) => v !== '')];
}

interface DiffFlags extends CompressOpts {
  from?: string[];
  to?: string[];
  uuid?: string;
  parent?: string;
  tag?: string;
  granularity?: number;
  verifyChain?: boolean;
  force?: boolean;
  json?: boolean;
}

export async function diffCommand(out: string, o: DiffFlags): Promise<void> {
  if (!o.from?.length || !o.to?.length) throw new InvalidArgumentError('give both images: --from IMAGE_A --to IMAGE_B (layer files bottom first, comma-separated or repeated; or a config.v1.json, oci:DIR:TAG, a registry reference)');
  const local = (specs: string[]) => argList(specs.filter((x) => existsSync(x)), 'image');
  await checkOutputs([{ path: out, arg: '<out>' }], [...local(o.from), ...local(o.to)], o.force);
  const { openImage } = await import('../image/open.ts');
  const { diffImages } = await import('../image/diff.ts');
  const opts = { verifyChain: o.verifyChain !== false, readOnly: true, onWarning: warn };
  let a: BlockDevice | undefined;
  let b: BlockDevice | undefined;
  const p = progressBar('diff', !o.json);
  try {
    a = await withChainHint(() => openImage(o.from!, opts));
    b = await withChainHint(() => openImage(o.to!, opts));
    const t0 = performance.now();
    const r = await writeLayerOutput(out, o, (sink) => diffImages(a!, b!, sink, { uuid: o.uuid, parentUuid: o.parent, userTag: o.tag, blockSize: o.granularity, onProgress: p.onProgress }));
    p.stop();
    const l = r.layer;
    const ms = Math.round(performance.now() - t0);
    output(o.json, { output: out, ...l, ms, compressed: r.zfile ?? null }, () =>
      `${out}: ${l.entries} entries, ${formatSize(l.dataBytes)} of data (${l.mode === 'layers' ? `the ${l.extraLayers} layer(s) above the first image, merged` : `compared ${formatSize(l.comparedBytes)} mapped in either image`}; ${ms} ms)${r.zfile ? `, compressed to ${formatSize(r.zfile.outputSize)}` : ''}`,
    );
  } finally {
    p.stop();
    await a?.close();
    await b?.close();
  }
}

/** Opens a writable layer; its module (a dozen more) loads only for the command that uses it. */
async function openWritable(data: string, index: string) {
  const { WritableLayer } = await import('../lsmt/writable.ts');
  return WritableLayer.open(data, index);
}

export async function compactFiles(data: string, index: string, o: { json?: boolean }): Promise<void> {
  const layer = await openWritable(data, index);
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
  const layer = await openWritable(data, index);
  try {
    const before = layer.size;
    await layer.resize(o.size, { shrink: o.shrink });
    output(o.json, { data, index, before, after: layer.size }, () => `${data}: virtual size ${formatSize(before)} → ${formatSize(layer.size)}`);
  } finally {
    await layer.close();
  }
}

export function register(program: Command): void {
  compressOptions(
    program
      .command('diff')
      .description('write the layer that, stacked on image A, reads exactly as image B (B = A plus layers: their merge; otherwise only the blocks that differ)')
      .argument('<out>', 'layer to write')
      .option('--from <image>', 'image A: layer files bottom first (repeat, or separate with commas), a config.v1.json, oci:DIR[:TAG] or a registry reference', collect)
      .option('--to <image>', 'image B, the same way', collect)
      .option('--granularity <size>', 'comparison block size, a multiple of 512 (default 4K)', sizeArg)
      .option('--uuid <uuid>', 'uuid of the new layer (default: random)')
      .option('--parent <uuid>', "parent uuid (default: the uuid of A's top layer)")
      .option('-m, --tag <text>', 'user tag (at most 256 bytes)')
      .option(...VERIFY_CHAIN)
      .option(...NO_VERIFY_CHAIN)
      .option(...FORCE)
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      `
Examples:
  obd diff --from base.lsmt,mon.lsmt --to base.lsmt,mon.lsmt,tue.lsmt,wed.lsmt delta.lsmt   # merges tue + wed
  obd diff --from oci:./images:v1 --to oci:./images:v2 delta.lsmt -z zstd                   # compares the disks
  obd diff --from vm-a.lsmt --to vm-b.lsmt delta.lsmt && obd export vm-a.lsmt delta.lsmt b.raw
`,
    )
    .action((out: string, o: DiffFlags) => diffCommand(out, o));

}
