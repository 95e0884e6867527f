/**
 * `obd convert SOURCE DEST`: an OCI or Docker image into an overlaybd image (docs/convert.md).
 * Sources: registry references, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE;
 * destinations: registry references, oci:DIR[:TAG], oci-archive:FILE[:TAG].
 */
import { Option, type Command } from 'commander';
import { formatSize } from '../io/util.ts';
import type { ConvertedLayer } from '../convert/convert.ts';
import { DEFAULT_TAG, formatReference, resolveReference } from '../remote/reference.ts';
import { intArg, output, printable, progressBar, sizeArg } from './common.ts';
import { addRemoteOptions, refuseExistingTag, remoteOptions, type RemoteFlags } from './remote.ts';

interface ConvertFlags extends RemoteFlags {
  vsize: number;
  cacheDir?: string;
  tmpDir?: string;
  algorithm: 'lz4' | 'zstd';
  blockSize: number;
  threads?: number;
  mountFrom?: string[];
  force?: boolean;
  json?: boolean;
}

function describe(l: ConvertedLayer): string {
  const how = l.cached ? 'cached  ' : `${(l.ms / 1000).toFixed(1).padStart(6)}s `;
  return `layer ${String(l.index).padStart(2)} ${how} ${l.digest} ${formatSize(l.size).padStart(10)}  ${l.pushed ?? ''}`;
}

export function register(program: Command): void {
  addRemoteOptions(
    program
      .command('convert')
      .description('convert an OCI or Docker image into an overlaybd image (ext4 in layered block devices), deterministically and without root')
      .argument('<source>', 'image to convert: registry reference, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]')
      .argument('<dest>', 'where the overlaybd image goes: registry reference, oci:DIR[:TAG] or oci-archive:FILE[:TAG]')
      .addOption(new Option('--vsize <size>', 'virtual disk size (K/M/G/T), a multiple of 4K').argParser(sizeArg).default(64 * 2 ** 30, '64G'))
      .option('--cache-dir <dir>', 'keep converted layers here (by chainID) and reuse them: a later image sharing base layers converts only its own')
      .option('--tmp-dir <dir>', 'where the work files go (default: beside an oci: destination, else the system temp dir)')
      .addOption(new Option('--algorithm <algorithm>', 'ZFile codec of the layer blobs').choices(['lz4', 'zstd']).default('lz4'))
      .addOption(new Option('--block-size <size>', 'ZFile block size, 4K..64K').argParser(sizeArg).default(4096, '4K'))
      .addOption(new Option('-j, --threads <n>', 'compression threads (the output is identical for any count; default: up to 4)').argParser(intArg))
      .option('--mount-from <repo...>', 'repositories of the destination registry to mount existing layer blobs from')
      .option('-f, --force', 'replace the image already at an oci:DIR or oci-archive: destination tag (never the source)')
      .option('--json', 'print the result as JSON')
      .addHelpText(
        'after',
        `
Each source layer becomes one overlaybd layer: its tar applied onto ext4 over the layers
below, committed as 'obd commit -z -t' does, uuid from its chainID. The same source gives
the same blobs and manifest on every run; with --cache-dir, layers converted before are
reused (and mounted from the repositories they were pushed to).

Examples:
  obd convert docker-archive:app.tar oci:app-obd:v1
  obd convert oci:alpine:3.20 127.0.0.1:5000/alpine:3.20-obd --cache-dir ~/.cache/obd-convert
  obd convert 127.0.0.1:5000/app:v2 127.0.0.1:5000/app:v2-obd --vsize 16G --algorithm zstd --json
`,
      ),
  ).action(async (source: string, dest: string, o: ConvertFlags) => {
    const t = await resolveReference(dest);
    await refuseExistingTag(t, t.tag ?? DEFAULT_TAG, o.force);
    const { convertImage } = await import('../convert/convert.ts');
    const bar = progressBar('convert', !o.json);
    const lines: string[] = [];
    try {
      const r = await convertImage(source, dest, {
        ...remoteOptions(o),
        vsize: o.vsize,
        cacheDir: o.cacheDir,
        tmpDir: o.tmpDir,
        algorithm: o.algorithm,
        blockSize: o.blockSize,
        threads: o.threads,
        mountFrom: o.mountFrom,
        onProgress: bar.onProgress,
        onLayer: (l, phase) => {
          // Without a terminal there is no bar: say what happens as it happens.
          if (!o.json && !process.stderr.isTTY && phase === 'converted') process.stderr.write(printable(`converted ${describe(l)}`) + '\n');
        },
      });
      bar.stop();
      lines.push(...r.layers.map(describe));
      output(o.json, r, () =>
        [
          ...lines,
          `converted ${r.source}@${r.sourceDigest} → ${formatReference(t)}@${r.digest}`,
          `${r.layers.length} layers (${r.cacheHits} from the cache), ${formatSize(r.layers.reduce((a, l) => a + l.size, 0))}, virtual size ${formatSize(r.vsize)}, ${(r.ms / 1000).toFixed(1)}s`,
        ].join('\n'),
      );
    } finally {
      bar.stop();
    }
  });
}
