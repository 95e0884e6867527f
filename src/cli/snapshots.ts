/**
 * `obd create`, `obd commit`, `obd merge`, `obd import`, `obd rw-info`: writable layers,
 * sealing them, flattening stacks, and raw disks in. Outputs are written under a temporary
 * name and renamed into place only when complete. Each command imports the library code it
 * runs when it runs, so registering the commands (for `obd --help`) is cheap.
 */
import { Option, type Command } from 'commander';
import { InvalidArgumentError } from '../io/errors.ts';
import type { ByteSink } from '../io/types.ts';
import { formatSize } from '../io/util.ts';
import type { CommitStats } from '../lsmt/commit.ts';
import type { LayerWriteStats } from '../lsmt/writer.ts';
import type { ZFileWriteStats } from '../zfile/writer.ts';
import { NO_VERIFY_CHAIN, openVerifiedStack, VERIFY_CHAIN } from './chain.ts';
import { atomicOutput, intArg, output, progressBar, sizeArg } from './common.ts';
import { argList, checkOutputs, FORCE } from './outputs.ts';

export interface CompressOpts {
  compress?: 'lz4' | 'zstd';
  blockSize?: number;
  tar?: boolean;
  threads?: number;
}

export interface ImportOpts extends IdentityOpts, CompressOpts {
  base?: string[];
  chain?: boolean;
  dirtyBitmap?: string;
  force?: boolean;
  granularity?: number;
  verifyChain: boolean;
}

export interface IdentityOpts {
  uuid?: string;
  parent?: string;
  tag?: string;
  json?: boolean;
}

/** Adds the ZFile output options shared by commit, merge and import. */
export function compressOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('-z, --compress <algorithm>', 'compress the output into a ZFile (as overlaybd-commit -z)').choices(['lz4', 'zstd']))
    .option('--block-size <size>', 'ZFile block size, 4K..64K, power of two (default 4K)', sizeArg)
    .option('-t, --tar', 'wrap the output in a tar member, as layer blobs are shipped')
    .option('-j, --threads <n>', 'compression threads (output is identical for any count)', intArg);
}


/**
 * Writes a sealed layer to `target` atomically, through a ZFile writer when asked, and
 * reports the layer stats plus the compressed output's.
 */
export async function writeLayerOutput<T extends LayerWriteStats>(
  target: string,
  o: CompressOpts,
  write: (out: ByteSink | string) => Promise<T>,
): Promise<{ layer: T; zfile?: ZFileWriteStats }> {
  if (!o.compress) {
    if (o.tar || o.blockSize !== undefined || o.threads !== undefined) throw new InvalidArgumentError('--tar, --block-size and --threads need --compress lz4|zstd');
    return { layer: await atomicOutput(target, (tmp) => write(tmp)) };
  }
  // Loaded on demand: the codecs are native modules that plain commands do not need.
  const { ZFileWriter } = await import('../zfile/writer.ts');
  return atomicOutput(target, async (tmp) => {
    const zw = await ZFileWriter.create(tmp, { algorithm: o.compress, blockSize: o.blockSize, tar: o.tar, threads: o.threads, crc: true, overwriteHeader: true });
    try {
      const layer = await write(zw);
      return { layer, zfile: await zw.finish() };
    } catch (e) {
      await zw.abort();
      throw e;
    }
  });
}

function describeOutput(target: string, r: { layer: LayerWriteStats; zfile?: ZFileWriteStats }): string {
  const l = r.layer;
  const z = r.zfile ? `, compressed to ${formatSize(r.zfile.outputSize)}` : '';
  return `${target}: ${l.entries} entries, ${formatSize(l.dataBytes)} of data, layer ${formatSize(l.fileSize)}${z}`;
}

/** `obd commit --seal`: the data file is the output; identity options do not apply. */
async function sealCommand(data: string, index: string, out: string | undefined, o: IdentityOpts & CompressOpts & { keepUuid?: boolean; force?: boolean }): Promise<void> {
  if (out !== undefined) throw new InvalidArgumentError(`--seal writes into ${data} itself; drop the output argument ${out}`);
  const bad = (['uuid', 'parent', 'tag', 'keepUuid', 'compress', 'tar', 'blockSize', 'threads'] as const).filter((k) => o[k] !== undefined);
  if (bad.length) throw new InvalidArgumentError(`--seal keeps the layer's own identity and writes no new file; --${bad.map((k) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)).join(', --')} do not apply`);
  const { sealLayer } = await import('../lsmt/seal.ts');
  const r = await sealLayer(data, index);
  output(o.json, { data, index, sealed: true, ...r }, () => `${data}: sealed in place, ${r.entries} entries, index at ${r.indexOffset}, ${formatSize(r.fileSize)} (open it as a layer: obd info ${data})`);
}

export function register(program: Command): void {
  program
    .command('create')
    .description('create a writable layer (data file + index file), as overlaybd-create')
    .argument('<data>', 'data file to create')
    .argument('<index>', 'index file to create')
    .option('-s, --size <size>', 'virtual size (K/M/G/T suffixes), a multiple of 512', sizeArg)
    .option('--uuid <uuid>', 'uuid of the new layer (default: random)')
    .option('--parent <uuid>', 'parent uuid (the layer it will sit on)')
    .option('--base <layer...>', 'the layers it will sit on, bottom first: parent = top uuid, size defaults to the stack\'s')
    .option(...VERIFY_CHAIN)
    .option(...NO_VERIFY_CHAIN)
    .option('--sparse', 'a sparse layer, as overlaybd-create -s: data in place in a data file spanning the disk, the index file left empty')
    .option('-f, --force', 'replace existing files (never the base layers)')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Examples:
  obd create rw.data rw.index --base base.lsmt          # append-only layer over base.lsmt
  obd create rw.data rw.index --size 64G --sparse       # as overlaybd-create -s (-s is --size here)
`,
    )
    .action(async (data: string, index: string, o: { size?: number; uuid?: string; parent?: string; base?: string[]; verifyChain?: boolean; sparse?: boolean; force?: boolean; json?: boolean }) => {
      await checkOutputs([{ path: data, arg: '<data>' }, { path: index, arg: '<index>' }], argList(o.base ?? [], '--base layer'), o.force);
      let size = o.size;
      let parent = o.parent;
      if (o.base?.length) {
        const stack = await openVerifiedStack(o.base, o.verifyChain);
        try {
          size ??= stack.size;
          parent ??= stack.layers.at(-1)!.uuid;
          if (size !== stack.size) throw new InvalidArgumentError(`--size ${size} differs from the base's virtual size ${stack.size}`);
        } finally {
          await stack.close();
        }
      }
      if (size === undefined) throw new InvalidArgumentError('give the virtual size with --size (or --base to take the size of the layers below)');
      const { WritableLayer } = await import('../lsmt/writable.ts');
      const layer = await WritableLayer.create(data, index, { virtualSize: size, uuid: o.uuid, parentUuid: parent, overwrite: o.force, sparse: o.sparse });
      await layer.close();
      const r = { data, index, uuid: layer.uuid, parentUuid: layer.parentUuid, virtualSize: layer.size, sparse: !!o.sparse };
      output(o.json, r, () => `created ${r.sparse ? 'sparse ' : ''}writable layer ${r.uuid} (${formatSize(r.virtualSize)}, parent ${r.parentUuid}): ${data} + ${index}`);
    });

  compressOptions(
    program
      .command('commit')
      .description('seal a writable layer into a committed layer holding only live data, as overlaybd-commit')
      .argument('<data>', 'writable layer data file')
      .argument('<index>', 'writable layer index file')
      .argument('[out]', 'committed layer to write (none with --seal)')
      .option('--seal', 'seal the data file in place instead, as overlaybd-commit --seal: it becomes a read-only layer holding its garbage too')
      .option('--uuid <uuid>', 'uuid of the committed layer (default: a new random one; 00000000-0000-0000-0000-000000000000 for none, as overlaybd-commit)')
      .option('--keep-uuid', "give the committed layer the writable layer's own uuid")
      .option('--parent <uuid>', "parent uuid (default: the writable layer's)")
      .option('-m, --tag <text>', 'user tag / commit message (at most 256 bytes)')
      .option(...FORCE)
      .option('--json', 'print JSON')
      .addHelpText(
        'after',
        `
Examples:
  obd commit rw.data rw.index snap.lsmt -m "monday" -z lz4   # a compact layer of the live data
  obd commit --seal rw.data rw.index                         # rw.data itself becomes a sealed layer
`,
      ),
  ).action(async (data: string, index: string, out: string | undefined, o: IdentityOpts & CompressOpts & { seal?: boolean; keepUuid?: boolean; force?: boolean }) => {
    if (o.seal) return sealCommand(data, index, out, o);
    if (out === undefined) throw new InvalidArgumentError('give the committed layer to write (or --seal to seal the data file in place)');
    if (o.keepUuid && o.uuid) throw new InvalidArgumentError('give either --uuid or --keep-uuid');
    await checkOutputs([{ path: out, arg: '<out>' }], [{ path: data, arg: '<data>' }, { path: index, arg: '<index>' }], o.force);
    const [{ commitLayer }, { randomUuid }] = await Promise.all([import('../lsmt/commit.ts'), import('../lsmt/format.ts')]);
    let uuid = o.uuid ?? randomUuid();
    if (o.keepUuid) {
      const { WritableLayer } = await import('../lsmt/writable.ts');
      const l = await WritableLayer.open(data, index, { readOnly: true });
      uuid = l.uuid;
      await l.close();
    }
    const p = progressBar('commit', !o.json);
    let r: { layer: CommitStats; zfile?: ZFileWriteStats };
    try {
      r = await writeLayerOutput(out, o, (sink) => commitLayer(data, index, sink, { uuid, parentUuid: o.parent, userTag: o.tag, onProgress: p.onProgress }));
    } finally {
      p.stop();
    }
    output(o.json, { output: out, ...r.layer, compressed: r.zfile ?? null }, () => describeOutput(out, r));
  });

  compressOptions(
    program
      .command('merge')
      .description('flatten a stack of layers into one layer that reads the same, as overlaybd-merge')
      .argument('<files...>', 'layers, bottom first, then the output file')
      .option('--uuid <uuid>', 'uuid of the merged layer (default: none)')
      .option('--parent <uuid>', "parent uuid (default: the bottom layer's)")
      .option('-m, --tag <text>', 'user tag (at most 256 bytes)')
      .option(...VERIFY_CHAIN)
      .option(...NO_VERIFY_CHAIN)
      .option(...FORCE)
      .option('--json', 'print JSON'),
  ).action(async (files: string[], o: IdentityOpts & CompressOpts & { verifyChain?: boolean; force?: boolean }) => {
    const layers = [...files];
    const out = layers.pop()!;
    if (layers.length === 0) throw new InvalidArgumentError('give at least one layer and then the output file');
    await checkOutputs([{ path: out, arg: '<output>' }], argList(layers, 'layer'), o.force);
    const { flattenStack } = await import('../lsmt/flatten.ts');
    const stack = await openVerifiedStack(layers, o.verifyChain);
    const p = progressBar('merge', !o.json);
    try {
      const r = await writeLayerOutput(out, o, (sink) => flattenStack(stack, sink, { uuid: o.uuid, parentUuid: o.parent, userTag: o.tag, onProgress: p.onProgress }));
      p.stop();
      output(o.json, { output: out, ...r.layer, compressed: r.zfile ?? null }, () => `${describeOutput(out, r)} (merged ${r.layer.layers} layers)`);
    } finally {
      p.stop();
      await stack.close();
    }
  });

  compressOptions(
    program
      .command('import')
      .description('make a layer from a disk: a raw file, a qcow2 image (through its backing chain) or an NBD export; its non-zero blocks, or only what differs from --base')
      .argument('<disk>', 'raw disk image, qcow2 image, or NBD URI (nbd://HOST:PORT/NAME, nbd+unix:///NAME?socket=PATH)')
      .argument('<out>', 'layer to write (with --chain: the directory for the layers)')
      .option('--base <layer...>', 'layers the result will sit on, bottom first: store only blocks that differ')
      .option('--chain', 'qcow2: one layer per image of the backing chain, bottom first, into the directory <out>, with a manifest.json')
      .option('--dirty-bitmap <name>', 'NBD: read only what the qemu dirty bitmap NAME marks, as a delta over --base (incremental backup)')
      .option('--granularity <size>', 'comparison block size, a multiple of 512 (default 4K)', sizeArg)
      .option('--uuid <uuid>', 'uuid of the new layer (default: random)')
      .option('--parent <uuid>', "parent uuid (default: the base's top layer uuid; with --chain: of the bottom layer)")
      .option('-m, --tag <text>', 'user tag (at most 256 bytes)')
      .option(...VERIFY_CHAIN)
      .option(...NO_VERIFY_CHAIN)
      .option(...FORCE)
      .option('--json', 'print JSON')
      .addHelpText(
        'after',
        `
--force also lets a qcow2 image marked dirty or corrupt be read (qemu-img check -r all would repair it).

Examples:
  obd import disk.raw disk.lsmt
  obd import vm.qcow2 vm.lsmt                         # flattened through its backing chain
  obd import top.qcow2 layers/ --chain -z zstd        # one layer per image, + layers/manifest.json
  obd import nbd+unix:///?socket=/tmp/vm.sock vm.lsmt # anything qemu-nbd or nbdkit serves
  obd import nbd://127.0.0.1:10809/vm inc.lsmt --dirty-bitmap b1 --base vm.lsmt
`,
      ),
  ).action(async (disk: string, out: string, o: ImportOpts) => {
    if (o.chain) {
      const { importChainCommand } = await import('./import-chain.ts');
      return importChainCommand(disk, out, o, writeLayerOutput);
    }
    if (o.dirtyBitmap !== undefined && !o.base?.length) throw new InvalidArgumentError('--dirty-bitmap writes a delta: give the layers it sits on with --base');
    const local = /^nbds?(\+unix)?:\/\//.test(disk) ? [] : [{ path: disk, arg: '<disk>' }];
    await checkOutputs([{ path: out, arg: '<out>' }], [...local, ...argList(o.base ?? [], '--base layer')], o.force);
    const [{ openDisk }, { importDevice }] = await Promise.all([import('../image/disk.ts'), import('../lsmt/import.ts')]);
    const base = o.base?.length ? await openVerifiedStack(o.base, o.verifyChain) : undefined;
    const p = progressBar('import', !o.json);
    try {
      const src = await openDisk(disk, { force: o.force, dirtyBitmap: o.dirtyBitmap });
      try {
        const r = await writeLayerOutput(out, o, (sink) =>
          importDevice(src.device, sink, { base, plan: src.plan, blockSize: o.granularity, uuid: o.uuid, parentUuid: o.parent, userTag: o.tag, onProgress: p.onProgress }),
        );
        p.stop();
        const l = r.layer;
        const images = src.kind === 'qcow2' ? src.chain.images.map((i) => ({ path: i.path, format: i.format })) : undefined;
        output(o.json, { input: disk, kind: src.kind, ...(images ? { chain: images } : {}), output: out, ...l, compressed: r.zfile ?? null }, () =>
          `${describeOutput(out, r)}: ${l.dataBlocks} data and ${l.zeroedBlocks} zeroed blocks of ${formatSize(l.blockSize)}${base ? ' differ from the base' : ''}${images && images.length > 1 ? ` (${images.length} qcow2 chain images flattened)` : ''}`,
        );
      } finally {
        await src.device.close();
      }
    } finally {
      p.stop();
      await base?.close();
    }
  });

  program
    .command('rw-info')
    .description('show a writable layer: identity, live entries, data, and what crash recovery would drop')
    .argument('<data>', 'writable layer data file')
    .argument('<index>', 'writable layer index file')
    .option('--json', 'print JSON')
    .action(async (data: string, index: string, o: { json?: boolean }) => {
      const [{ lockHolder }, { WritableLayer }] = await Promise.all([import('../io/lock.ts'), import('../lsmt/writable.ts')]);
      const writer = await lockHolder(data);
      const l = await WritableLayer.open(data, index, { readOnly: true, allowWriter: true });
      const s = l.stats();
      await l.close();
      const r = { data, index, uuid: l.uuid, parentUuid: l.parentUuid, virtualSize: l.size, ...s, recovery: l.recovery, openForWritingBy: writer ?? null };
      output(o.json, r, () =>
        [
          `${data} + ${index}:`,
          `  uuid            ${r.uuid}`,
          `  parent uuid     ${r.parentUuid}`,
          `  virtual size    ${formatSize(r.virtualSize)} (${r.virtualSize} bytes)`,
          `  live entries    ${r.entries} (${formatSize(r.liveDataBytes)} of live data)`,
          `  data file       ${formatSize(r.dataFileBytes)}`,
          `  index entries   ${r.recovery.entriesOnDisk} on disk${r.recovery.droppedEntries || r.recovery.droppedBytes ? `, ${r.recovery.droppedEntries} torn or dangling (${r.recovery.droppedBytes} bytes) would be dropped` : ''}`,
          ...(r.openForWritingBy ? [`  in use          open for writing by process ${r.openForWritingBy} (figures may change)`] : []),
        ].join('\n'),
      );
    });
}
