/**
 * `obd demo`: the README's main job. Builds a three-snapshot ext4 image as sealed layers in a
 * local folder, pushes them (compressed, tar-wrapped) into an OCI image layout — the embedded
 * default repository, no registry needed — opens the image from there lazily, shows that it
 * reads back exactly as the final disk, then serves it over NBD until Ctrl-C. The library
 * code is imported when the demo runs, so registering it (for `obd --help`) is cheap.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { fsPromises } from '../io/builtins.ts';
import type { describeLayer } from '../image/info.ts';
import { formatSize } from '../io/util.ts';
import type { Stack } from '../lsmt/stack.ts';
import type { NbdServer } from '../nbd/index.ts';
import { onStopSignal, output } from './common.ts';
import { inspectCommands } from './nbd.ts';

export function register(program: Command): void {
  program
    .command('demo')
    .description('build a sample 3-snapshot ext4 image as layers, verify it, and serve it over NBD until Ctrl-C')
    .option('--dir <dir>', 'folder for the sample layers', 'obd-demo')
    .option('--socket <path>', 'unix socket to serve on (default: <dir>/obd.sock)')
    .option('--no-serve', 'build and verify only')
    .option('--json', 'print JSON')
    .action(async (opts: { dir: string; socket?: string; serve: boolean; json?: boolean }) => {
      const { createHash } = await import('node:crypto');
      const { sha256Device } = await import('../image/export.ts');
      const { describeLayer } = await import('../image/info.ts');
      const { openImage, openLayerFile } = await import('../image/open.ts');
      const { NbdServer, nbdUri } = await import('../nbd/index.ts');
      const { pushImage } = await import('../image/push.ts');
      const { buildSampleImage } = await import('./sample.ts');
      const dir = path.resolve(opts.dir);
      await fsPromises().mkdir(dir, { recursive: true });
      const t0 = performance.now();
      const sample = await buildSampleImage(dir);
      const buildMs = performance.now() - t0;
      const expected = createHash('sha256').update(await fsPromises().readFile(path.join(dir, 'expected.raw'))).digest('hex');
      await fsPromises().rm(path.join(dir, 'expected.raw'));

      const ref = `oci:${path.join(dir, 'images')}:demo`;
      const pushed = await pushImage(sample.map((l) => l.file), ref, { fsType: 'ext4' });
      const infos = [];
      for (const [i, l] of sample.entries()) {
        const opened = await openLayerFile(l.file);
        infos.push({ ...describeLayer(opened, l.file), changedBlocks: l.dataBlocks + l.zeroedBlocks, blob: pushed.layers[i]!.digest, blobBytes: pushed.layers[i]!.size });
        await opened.source.close();
      }
      const stack = (await openImage([ref], { verifyChain: true })) as Stack;
      let server: NbdServer | undefined;
      let signals: ReturnType<typeof onStopSignal> | undefined;
      try {
        const flat = await sha256Device(stack);
        const summary = {
          dir,
          image: ref,
          manifest: pushed.digest,
          buildMs: Math.round(buildMs),
          layers: infos,
          mergedIndexEntries: stack.index.count,
          virtualSize: stack.size,
          flattenedSha256: flat,
          expectedSha256: expected,
          verified: flat === expected,
        };
        if (!opts.serve) {
          output(opts.json, summary, () => human(summary));
          if (!summary.verified) process.exitCode = 1;
          return;
        }
        const socket = path.resolve(opts.socket ?? path.join(dir, 'obd.sock'));
        server = new NbdServer({ exports: { '': { device: stack, description: `obd demo: 3-layer ext4 sample from ${ref}` } } });
        await server.listen({ socket });
        const uri = nbdUri({ socket });
        output(opts.json, { ...summary, socket, uri }, () => human(summary) + '\n\n' + howToLook(uri, socket, dir, ref));
        signals = onStopSignal('closing');
        await signals.stopped;
      } finally {
        await server?.close();
        await stack.close();
        signals?.dispose();
      }
    });
}

function human(s: {
  dir: string;
  image: string;
  buildMs: number;
  layers: (ReturnType<typeof describeLayer> & { changedBlocks: number; blobBytes: number })[];
  mergedIndexEntries: number;
  virtualSize: number;
  flattenedSha256: string;
  expectedSha256: string;
  verified: boolean;
}): string {
  const lines = [`Built a ${formatSize(s.virtualSize)} ext4 disk and two later snapshots as layers in ${s.dir} (${s.buildMs} ms):`, ''];
  s.layers.forEach((l, i) => {
    lines.push(`  layer ${i + 1}  ${path.basename(l.file)}  ${formatSize(l.storedBytes).padStart(9)}  ${String(l.changedBlocks).padStart(4)} changed 4K blocks  "${l.userTag}"`);
    lines.push(`           uuid ${l.uuid}  parent ${l.parentUuid}`);
  });
  lines.push('');
  lines.push(`Pushed to the OCI layout ${s.image} as lz4 zfile blobs of ${s.layers.map((l) => formatSize(l.blobBytes)).join(', ')},`);
  lines.push(`and opened from there lazily: a stack of ${s.layers.length} layers with one merged index of ${s.mergedIndexEntries} entries.`);
  lines.push(`Image read back        ${s.flattenedSha256}`);
  lines.push(`Final snapshot         ${s.expectedSha256}  ${s.verified ? '(identical sha256)' : '(MISMATCH)'}`);
  return lines.join('\n');
}

function howToLook(uri: string, socket: string, dir: string, ref: string): string {
  return [
    `Serving it over NBD at ${uri}`,
    `Look at it from another terminal:`,
    ...inspectCommands(uri, dir).map((c) => `  ${c}`),
    `Serve it again later, or from a registry after \`obd copy ${ref} HOST/REPO:TAG\`:`,
    `  obd serve ${ref} --socket ${socket}`,
    `Press Ctrl-C to stop.`,
  ].join('\n');
}
