/**
 * `obd verity add`, `obd verify`, `obd cache ls|verify|gc`: verity trees for existing images,
 * integrity checks of images and of cache directories (docs/format.md §7.5). Each command
 * imports the library code it runs when it runs, so registering them (for `obd --help`) is cheap.
 */
import { Option, type Command } from 'commander';
import { formatSize } from '../io/util.ts';
import { intArg, output, progressBar, sizeArg } from './common.ts';
import { addRemoteOptions, remoteOptions, type RemoteFlags } from './remote.ts';

export function register(program: Command): void {
  const verity = program.command('verity').description('verity trees: Merkle trees that let every lazily read byte be checked');
  addRemoteOptions(
    verity
      .command('add')
      .description('add a verity tree to every layer of an existing image that has none; the layer blobs stay, the tag moves to the new manifest')
      .argument('<ref>', 'image reference (registry or oci:DIR[:tag])')
      .addOption(new Option('--chunk-size <size>', 'tree chunk size').argParser(sizeArg).default(128 * 1024, '128K'))
      .option('--json', 'print the result as JSON')
      .addHelpText('after', '\nExamples:\n  obd verity add localhost:5000/disks/vm1:v1\n  obd verity add oci:./layout:v1 --json\n'),
  ).action(async (ref: string, o: RemoteFlags & { chunkSize: number; json?: boolean }) => {
    const { addVerity } = await import('../verity/add.ts');
    const b = progressBar('verity', !o.json);
    try {
      const r = await addVerity(ref, { ...remoteOptions(o), chunk: o.chunkSize, onProgress: b.onProgress });
      b.stop();
      output(o.json, r, () =>
        [...r.layers.map((l) => `${l.added ? 'added  ' : 'present'} ${l.digest} ${formatSize(l.size).padStart(10)}  tree ${l.tree}`), r.digest === r.previous ? `${r.reference}: every layer already had a tree` : `${r.reference}@${r.digest} (was ${r.previous})`].join('\n'),
      );
    } finally {
      b.stop();
    }
  });

  addRemoteOptions(
    program
      .command('verify')
      .description("check an image's integrity: layer digests, verity trees, zfile CRCs, LSMT index rules, the parent-uuid chain; exits 1 on any failure")
      .argument('<image...>', 'layer files (bottom → top), a config.v1.json, oci:DIR[:tag] or a registry reference')
      .option('--json', 'print the report as JSON')
      .addHelpText('after', '\nExamples:\n  obd verify base.lsmt app.zfile\n  obd verify localhost:5000/disks/vm1:v1\n  obd verify /var/lib/obd/vm1/config.v1.json --json\n'),
  ).action(async (image: string[], o: RemoteFlags & { json?: boolean }) => {
    const { checkImage } = await import('../verity/check.ts');
    const b = progressBar('verify', !o.json);
    try {
      const r = await checkImage(image, { ...remoteOptions(o), onProgress: b.onProgress });
      b.stop();
      output(o.json, r, () =>
        [
          ...r.layers.flatMap((l, i) => [`layer ${i} ${l.ok ? 'ok  ' : 'FAIL'} ${l.name} ${formatSize(l.size)} ${l.wrapping.join('>')}`, ...l.checks.map((c) => `  ${c.ok ? 'ok  ' : 'FAIL'} ${c.check.padEnd(6)} ${c.detail}`)]),
          ...(r.chain ? [`${r.chain.ok ? 'ok  ' : 'FAIL'} chain  ${r.chain.detail}`] : []),
          r.ok ? `verified ${r.layers.length} layers, ${formatSize(r.bytes)}` : 'FAILED',
        ].join('\n'),
      );
      if (!r.ok) process.exitCode = 1;
    } finally {
      b.stop();
    }
  });

  const cache = program.command('cache').description('inspect, check and trim an on-disk cache directory (--cache-dir); safe while a server uses it');
  cache
    .command('ls')
    .description('list the blobs held: digest, bytes held of the size, last use')
    .argument('<dir>', 'cache directory')
    .option('--json', 'print the listing as JSON')
    .addHelpText('after', '\nExamples:\n  obd cache ls /var/cache/obd\n  obd cache ls --json /var/cache/obd | jq \'.blobs[] | select(.bytes == .size)\'   # fully held blobs\n')
    .action(async (dir: string, o: { json?: boolean }) => {
      const { listCache } = await import('../remote/cache-admin.ts');
      const r = await listCache(dir);
      output(o.json, r, () => [...r.blobs.map((b) => `${b.key} ${formatSize(b.bytes).padStart(10)} of ${formatSize(b.size).padStart(10)}  ${b.lastUse}`), `${r.blobs.length} blobs, ${formatSize(r.usage)}`].join('\n'));
    });
  cache
    .command('verify')
    .description('check every held unit (CRC; sha256 of complete blobs); bad units are dropped so they are fetched again; exits 1 when any was bad')
    .argument('<dir>', 'cache directory')
    .option('--json', 'print the report as JSON')
    .addHelpText('after', '\nExamples:\n  obd cache verify /var/cache/obd\n  obd cache verify --json /var/cache/obd || echo "damaged units were dropped"\n')
    .action(async (dir: string, o: { json?: boolean }) => {
      const { verifyCache } = await import('../remote/cache-admin.ts');
      const b = progressBar('cache verify', !o.json);
      try {
        const r = await verifyCache(dir, undefined, b.onProgress);
        b.stop();
        output(o.json, r, () => [...r.blobs.map((x) => `${x.dropped ? 'FAIL' : 'ok  '} ${x.key} ${x.held}/${x.units} units${x.dropped ? `, ${x.dropped} dropped` : ''}${x.complete ? ', complete' : ''}`), r.ok ? 'cache ok' : 'damaged units dropped'].join('\n'));
        if (!r.ok) process.exitCode = 1;
      } finally {
        b.stop();
      }
    });
  cache
    .command('gc')
    .description('evict blobs, least recently used first, down to --max-size, and those unused for --max-age')
    .argument('<dir>', 'cache directory')
    .option('--max-size <size>', 'keep at most this many bytes', sizeArg)
    .option('--max-age <seconds>', 'drop blobs unused for longer', intArg)
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  obd cache gc /var/cache/obd --max-size 10G\n  obd cache gc /var/cache/obd --max-age 604800\n')
    .action(async (dir: string, o: { maxSize?: number; maxAge?: number; json?: boolean }) => {
      const { gcCache } = await import('../remote/cache-admin.ts');
      const r = await gcCache(dir, { maxBytes: o.maxSize, maxAgeMs: o.maxAge === undefined ? undefined : o.maxAge * 1000 });
      output(o.json, r, () => [...r.dropped.map((k) => `dropped ${k}`), `${r.dropped.length} blobs dropped, ${formatSize(r.usage)} held`].join('\n'));
    });
}
