/** `obd`: the command line over the overlaybd-ts library. Commands live in one file per area. */
import { Command } from 'commander';
import { reportError } from './common.ts';
import * as layers from './layers.ts';
import * as snapshots from './snapshots.ts';
import * as zfile from './zfile.ts';
import * as nbd from './nbd.ts';
import * as remote from './remote.ts';
import * as demo from './demo.ts';

const program = new Command('obd')
  .description('OverlayBD layered block-device images: LSMT layers, ZFile compression, registries, NBD export')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)');

for (const area of [layers, snapshots, zfile, nbd, remote, demo]) area.register(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.exitCode = reportError(e);
}
