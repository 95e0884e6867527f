/**
 * `obd snapshot`, `obd compact --control`, `obd resize --control`: clients of a running
 * `obd serve --control` (docs/control-api.md). Each sends one request, prints the result
 * (human or --json) and exits non-zero when the server refuses or fails it. `compact` and
 * `resize` given DATA INDEX instead work offline on the files (maintenance.ts).
 */
import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { formatSize } from '../io/util.ts';
import { controlRequest } from '../live/client.ts';
import { output, sizeArg } from './common.ts';
import { addControlOptions, controlTarget, type ControlFlags } from './control-flags.ts';

interface LiveFlags extends ControlFlags {
  export?: string;
}

/** The control flags, and the export they act on. */
function addLiveOptions(cmd: Command): Command {
  return addControlOptions(cmd).option('--export <name>', 'the live export (default: the only one)');
}

/** True for the offline form (DATA INDEX), false for the live one (--control); anything else is refused. */
function offline(data: string | undefined, index: string | undefined, o: LiveFlags): boolean {
  if (data !== undefined && index === undefined) throw new InvalidArgumentError('give both files of the layer: DATA INDEX');
  if (data !== undefined && o.control) throw new InvalidArgumentError('give DATA INDEX (offline) or --control (live), not both');
  if (data !== undefined && o.export !== undefined) throw new InvalidArgumentError('--export names a live export; it goes with --control');
  return data !== undefined;
}

const ms = (v: unknown) => `${Number(v).toFixed(1)} ms`;

export function register(program: Command): void {
  addLiveOptions(
    program
      .command('snapshot')
      .description('take a live snapshot of a disk served by obd serve --control: seal the upper, optionally commit and push it, while clients stay connected')
      .option('--commit <file>', 'commit the sealed layer into this file (atomic; refused if it exists)')
      .addOption(new Option('-z, --compress <algorithm>', 'compress the committed layer into a ZFile').choices(['lz4', 'zstd']))
      .option('--push <ref>', 'push the image (lowers + the new layer) to this reference; layers already there are not uploaded')
      .option('-m, --tag <text>', 'user tag of the committed layer')
      .option('--rate <bytes/s>', 'pace of the background commit, hashing and upload (K/M/G suffixes, per second; 0: unlimited; default: obd serve --snapshot-rate, 100M)', sizeArg),
  )
    .addHelpText(
      'after',
      `
Examples:
  obd serve base.lsmt --writable --upper rw.data rw.index --socket /tmp/vm.sock --control /tmp/vm.ctl
  obd snapshot --control /tmp/vm.ctl                                  # seal only (fast)
  obd snapshot --control /tmp/vm.ctl --commit snap1.lsmt -z lz4        # + commit
  obd snapshot --control /tmp/vm.ctl --push localhost:5000/disks/vm:snap1
`,
    )
    .action(async (o: LiveFlags & { commit?: string; compress?: string; push?: string; tag?: string; rate?: number }) => {
      const t = await controlTarget(o);
      const body: Record<string, unknown> = {};
      if (o.export !== undefined) body.export = o.export;
      if (o.commit) body.commit = path.resolve(o.commit);
      if (o.compress) body.compress = o.compress;
      if (o.push) body.push = o.push;
      if (o.tag) body.tag = o.tag;
      if (o.rate !== undefined) body.rate = o.rate;
      const r = await controlRequest(t, 'POST', '/v1/snapshot', body);
      output(o.json, r, () => {
        const layer = r.layer as { uuid: string; data: string; file?: string };
        const upper = r.upper as { uuid: string; data: string };
        const lines = [`snapshot: sealed layer ${layer.uuid} (writes held ${ms(r.pauseMs)})`, `  new upper ${upper.uuid}: ${upper.data}`];
        const c = r.commit as { file: string; bytes: number; ms: number } | undefined;
        if (c) lines.push(`  committed ${c.file} (${formatSize(c.bytes)}, ${ms(c.ms)})`);
        const p = r.push as { reference: string; digest: string; uploaded: number; layersUploaded: number; ms: number } | undefined;
        if (p) lines.push(`  pushed ${p.reference}@${p.digest}: ${p.layersUploaded} layer(s), ${formatSize(p.uploaded)} uploaded (${ms(p.ms)})`);
        lines.push(`  recorded in ${r.record}`);
        return lines.join('\n');
      });
    });

  addLiveOptions(
    program
      .command('compact')
      .description('compact a writable upper: live through obd serve --control (its live extents rewritten into new files while I/O goes on), or offline given DATA INDEX (files swapped atomically; a crash leaves the old or the new pair)')
      .argument('[data]', 'offline: writable layer data file')
      .argument('[index]', 'offline: writable layer index file'),
  )
    .addHelpText('after', '\nExamples:\n  obd compact --control /tmp/vm.ctl\n  obd compact rw.data rw.index      # offline; reports the bytes reclaimed\n')
    .action(async (data: string | undefined, index: string | undefined, o: LiveFlags) => {
      if (offline(data, index, o)) return (await import('./maintenance.ts')).compactFiles(data!, index!, o);
      const r = await controlRequest(await controlTarget(o), 'POST', '/v1/compact', o.export !== undefined ? { export: o.export } : {});
      output(o.json, r, () => `compact: ${formatSize(Number(r.dataBytesBefore))} → ${formatSize(Number(r.dataBytesAfter))} (${formatSize(Number(r.reclaimed))} reclaimed)`);
    });

  addLiveOptions(
    program
      .command('resize')
      .description('change the virtual size of a writable upper, durably: live through obd serve --control (clients connected before keep seeing the old size), or offline given DATA INDEX')
      .argument('[data]', 'offline: writable layer data file')
      .argument('[index]', 'offline: writable layer index file')
      .requiredOption('--size <size>', 'new virtual size (K/M/G/T suffixes), a multiple of 512', sizeArg)
      .option('--shrink', 'allow a smaller size (refused if anything is mapped past the new end)'),
  )
    .addHelpText('after', '\nExamples:\n  obd resize --control /tmp/vm.ctl --size 20G\n  obd resize rw.data rw.index --size 20G              # offline\n  obd resize rw.data rw.index --size 1G --shrink\n')
    .action(async (data: string | undefined, index: string | undefined, o: LiveFlags & { size: number; shrink?: boolean }) => {
      if (offline(data, index, o)) return (await import('./maintenance.ts')).resizeFiles(data!, index!, o);
      const body: Record<string, unknown> = { size: o.size };
      if (o.export !== undefined) body.export = o.export;
      if (o.shrink) body.shrink = true;
      const r = await controlRequest(await controlTarget(o), 'POST', '/v1/resize', body);
      output(o.json, r, () => `resize: ${formatSize(Number(r.before))} → ${formatSize(Number(r.after))} (new connections see the new size)`);
    });
}
