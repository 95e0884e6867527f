/** The flags every client of a running `obd serve --control` takes, and the target they name. */
import { readFile } from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import type { ControlTarget } from '../live/client.ts';

export interface ControlFlags {
  control?: string;
  controlToken?: string;
  json?: boolean;
}

export function addControlOptions(cmd: Command): Command {
  return cmd
    .option('--control <socket|url>', 'the control API of obd serve: its unix socket, or http://127.0.0.1:PORT')
    .option('--control-token <file>', 'file holding the bearer token (TCP control API)')
    .option('--json', 'print the result as JSON');
}

export async function controlTarget(o: ControlFlags): Promise<ControlTarget> {
  if (!o.control) throw new InvalidArgumentError('--control SOCKET is required (the --control of obd serve)');
  return { address: o.control, token: o.controlToken ? (await readFile(o.controlToken, 'utf8')).trim() : undefined };
}
