/**
 * `obd attach` and `obd detach`: add an export to a running `obd serve --control`, or take
 * one away (docs/control-api.md). An attached image shares every layer it has in common
 * with the exports already served; a detached export's clients are disconnected cleanly,
 * and a writable one is flushed first.
 */
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { fsPromises } from '../io/builtins.ts';
import { formatSize } from '../io/util.ts';
import { output } from './common.ts';
import { addControlOptions, controlRequest, controlTarget, type ControlFlags } from './control-flags.ts';

/** Files and directories here are sent as absolute paths (the server has its own working directory); references as given. */
async function absolute(arg: string): Promise<string> {
  return (await fsPromises().stat(arg).then(() => true, () => false)) ? path.resolve(arg) : arg;
}

export function register(program: Command): void {
  addControlOptions(
    program
      .command('attach')
      .description('add an export to a running obd serve --control; layers it shares with the served exports are not opened again')
      .argument('<name>', 'the new export\'s name')
      .argument('<image...>', 'layer files bottom → top, or one config.v1.json, oci:DIR[:tag] or registry reference')
      .option('--writable', 'serve it writable, through the upper layer of --upper')
      .option('--upper <data index...>', 'writable upper layer: its data and index files (created when both are missing)'),
  )
    .addHelpText(
      'after',
      `
Examples:
  obd serve base.lsmt --socket /tmp/obd.sock --control /tmp/obd.ctl
  obd attach --control /tmp/obd.ctl vm2 base.lsmt vm2.lsmt
  obd attach --control /tmp/obd.ctl vm3 localhost:5000/disks/vm:v1 --writable --upper vm3.data vm3.index
  obd detach --control /tmp/obd.ctl vm2
`,
    )
    .action(async (name: string, image: string[], o: ControlFlags & { writable?: boolean; upper?: string[] }) => {
      if (o.upper && o.upper.length !== 2) throw new InvalidArgumentError('--upper takes two files: DATA INDEX');
      if (o.writable && !o.upper) throw new InvalidArgumentError('--writable needs --upper DATA INDEX');
      if (o.upper && !o.writable) throw new InvalidArgumentError('--upper goes with --writable');
      const body: Record<string, unknown> = { export: name, image: await Promise.all(image.map(absolute)) };
      if (o.writable) body.writable = true;
      if (o.upper) body.upper = { data: path.resolve(o.upper[0]!), index: path.resolve(o.upper[1]!) };
      const r = await controlRequest(await controlTarget(o), 'POST', '/v1/attach', body);
      const e = (r.exports as { name: string; size: number; readOnly: boolean; layers: number }[] | undefined)?.[0];
      output(o.json, r, () => `attached "${name}"${e ? `: ${formatSize(e.size)}, ${e.layers} layer${e.layers === 1 ? '' : 's'}, ${e.readOnly ? 'read-only' : 'writable'}` : ''}`);
    });

  addControlOptions(
    program
      .command('detach')
      .description('take an export away from a running obd serve --control: its clients are disconnected, a writable one is flushed first')
      .argument('<name>', 'the export'),
  )
    .addHelpText('after', '\nExample:\n  obd detach --control /tmp/obd.ctl vm2\n')
    .action(async (name: string, o: ControlFlags) => {
      const r = await controlRequest(await controlTarget(o), 'POST', '/v1/detach', { export: name });
      output(o.json, r, () => `detached "${name}"`);
    });
}
