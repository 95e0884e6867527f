/** `obd zfile …`: compress, decompress, verify and inspect ZFile blobs (tar-wrapped or not). */
import { Option, type Command } from 'commander';
import { fsPromises } from '../io/builtins.ts';
import { formatSize, hex } from '../io/util.ts';
import type { ZFileInfo, ZFileReader } from '../zfile/reader.ts';
import type { ZFileWriterOptions } from '../zfile/writer.ts';
import type { Algorithm, ZFileHeader } from '../zfile/format.ts';
import { atomicOutput, intArg, output, progressBar, sizeArg } from './common.ts';
import { checkOutputs, FORCE } from './outputs.ts';


/** Opens a zfile at `path`, peeling a tar wrapper when there is one. */
async function openZFile(path: string): Promise<{ reader: ZFileReader; tar: { offset: number; size: number } | null }> {
  const [{ FileSource }, { openTarEntry }, { ZFileReader }] = await Promise.all([import('../io/file.ts'), import('../zfile/tar.ts'), import('../zfile/reader.ts')]);
  const file = await FileSource.open(path);
  try {
    const entry = await openTarEntry(file);
    const reader = await ZFileReader.open(entry ?? file);
    const tar = entry ? { offset: entry.base, size: entry.size } : null;
    return { reader, tar };
  } catch (e) {
    await file.close();
    throw e;
  }
}

function ratio(a: number, b: number): string {
  return b === 0 ? '-' : `${((100 * a) / b).toFixed(1)} %`;
}

function headerLine(h: ZFileHeader): string {
  return `flags 0x${h.flags.toString(16)}, digest ${hex(h.digest)}, index @${h.indexOffset} × ${h.indexSize}, original ${h.originalSize}, index crc ${hex(h.indexCrc)}`;
}

function infoText(path: string, info: ZFileInfo, tar: { offset: number; size: number } | null): string {
  const lines = [
    `file:          ${path}${tar ? ` (tar member: ${tar.size} bytes at ${tar.offset})` : ''}`,
    `algorithm:     ${info.algorithm}${info.algorithm === 'zstd' ? ` (level ${info.level})` : ''}`,
    `block size:    ${formatSize(info.blockSize)}`,
    `block CRC:     ${info.crc ? 'yes' : 'no'}`,
    `original size: ${info.originalSize} (${formatSize(info.originalSize)})`,
    `zfile size:    ${info.compressedSize} (${formatSize(info.compressedSize)}, ${ratio(info.compressedSize, info.originalSize)} of original)`,
    `blocks:        ${info.blocks} (${info.storedBytes} stored bytes)`,
    `jump table:    @${info.indexOffset}, crc ${hex(info.indexCrc)}`,
    `header:        ${headerLine(info.header)}${info.headerOverwritten ? ' (overwritten with final index)' : ''}`,
    `trailer:       ${info.trailer ? headerLine(info.trailer) : 'unreadable (header is authoritative)'}`,
  ];
  return lines.join('\n');
}

export function register(program: Command): void {
  const z = program.command('zfile').description('ZFile: seekable compressed blobs, compatible with overlaybd-zfile');

  z.command('compress')
    .description('compress a file into a zfile')
    .argument('<in>', 'input file, or - for standard input')
    .argument('<out>', 'output zfile')
    .addOption(new Option('-z, --compress <algorithm>', 'codec, as in commit, import and push').choices(['lz4', 'zstd']).default('lz4'))
    .addOption(new Option('-a, --algorithm <name>', 'the same as --compress (the name overlaybd-zfile users know)').choices(['lz4', 'zstd']))
    .option('-l, --level <n>', 'zstd level 1..22 (default 3, as the reference)', intArg)
    .addOption(new Option('-b, --block-size <size>', 'uncompressed bytes per block, 4K..64K, power of two').argParser(sizeArg).default(4096, '4K'))
    .option('--no-crc', 'do not store a CRC after each block')
    .option('-t, --tar', 'wrap the zfile in a tar member, as layer blobs are shipped')
    .option('--overwrite-header', 'rewrite the header with the final index (as overlaybd-commit -z does)')
    .option('-j, --threads <n>', 'compression threads (output is identical for any count)', intArg, 1)
    .option(...FORCE)
    .option('--json', 'print the result as JSON')
    .action(async (input: string, out: string, o: { compress: Algorithm; algorithm?: Algorithm; level?: number; blockSize: number; crc: boolean; tar?: boolean; overwriteHeader?: boolean; threads: number; force?: boolean; json?: boolean }) => {
      await checkOutputs([{ path: out, arg: '<out>' }], [{ path: input, arg: '<in>' }], o.force);
      const opts: ZFileWriterOptions = {
        algorithm: o.algorithm ?? o.compress,
        level: o.level,
        blockSize: o.blockSize,
        crc: o.crc,
        tar: o.tar ?? false,
        overwriteHeader: o.overwriteHeader ?? false,
        threads: o.threads,
      };
      const { compressFile, compressStream } = await import('../zfile/writer.ts');
      const p = progressBar('compress', !o.json);
      const t0 = performance.now();
      let stats;
      try {
        stats = await atomicOutput(out, (tmp) =>
          input === '-' ? compressStream(process.stdin, tmp, opts) : compressFile(input, tmp, { ...opts, onProgress: p.onProgress }),
        );
      } finally {
        p.stop();
      }
      const secs = (performance.now() - t0) / 1000;
      output(o.json, { input, output: out, ...opts, ...stats, seconds: secs }, () =>
        `${out}: ${stats.originalSize} → ${stats.outputSize} bytes (${ratio(stats.outputSize, stats.originalSize)}), ${stats.blocks} blocks, ` +
        `${(stats.originalSize / 1e6 / Math.max(secs, 1e-9)).toFixed(0)} MB/s`,
      );
    });

  z.command('decompress')
    .description('decompress a zfile (tar-wrapped or not) into a plain file')
    .argument('<in>', 'zfile')
    .argument('<out>', 'output file')
    .option(...FORCE)
    .option('--json', 'print the result as JSON')
    .action(async (input: string, out: string, o: { force?: boolean; json?: boolean }) => {
      await checkOutputs([{ path: out, arg: '<out>' }], [{ path: input, arg: '<in>' }], o.force);
      const { decompressFile } = await import('../zfile/writer.ts');
      const p = progressBar('decompress', !o.json);
      const t0 = performance.now();
      let stats;
      try {
        stats = await atomicOutput(out, (tmp) => decompressFile(input, tmp, { onProgress: p.onProgress }));
      } finally {
        p.stop();
      }
      const secs = (performance.now() - t0) / 1000;
      output(o.json, { input, output: out, ...stats, seconds: secs }, () =>
        `${out}: ${stats.originalSize} bytes from ${stats.blocks} blocks, ${(stats.originalSize / 1e6 / Math.max(secs, 1e-9)).toFixed(0)} MB/s`,
      );
    });

  z.command('verify')
    .description('check every block of a zfile (CRC and decode); exits non-zero on any damage')
    .argument('<in>', 'zfile (tar-wrapped or not)')
    .option('--crc-only', 'check CRCs without decoding (like overlaybd-zfile --verify)')
    .option('--json', 'print the report as JSON')
    .action(async (input: string, o: { crcOnly?: boolean; json?: boolean }) => {
      const { reader } = await openZFile(input);
      const p = progressBar('verify', !o.json);
      let report;
      try {
        report = await reader.verify({ decode: !o.crcOnly, onProgress: p.onProgress });
      } finally {
        p.stop();
        await reader.close();
      }
      const errors = report.errors.map((e) => ({ block: e.block, offset: e.offset, kind: e.kind, message: e.message }));
      output(o.json, { file: input, ...report, errors }, () =>
        report.ok
          ? `${input}: OK, ${report.blocks} blocks (${report.crcChecked} CRCs checked, ${report.decoded} decoded)`
          : [`${input}: ${report.errorCount} bad block(s) of ${report.blocks}`, ...errors.map((e) => `  ${e.message}`)].join('\n'),
      );
      if (!report.ok) process.exitCode = 1;
    });

  z.command('info')
    .description('show the header, trailer and layout of a zfile')
    .argument('<in>', 'zfile (tar-wrapped or not)')
    .option('--json', 'print as JSON')
    .action(async (input: string, o: { json?: boolean }) => {
      const { reader, tar } = await openZFile(input);
      const info = reader.info;
      await reader.close();
      const fileSize = (await fsPromises().stat(input)).size;
      output(o.json, { file: input, fileSize, tar, ...info }, () => infoText(input, info, tar));
    });
}
