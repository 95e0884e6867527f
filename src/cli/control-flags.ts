/** The flags every client of a running `obd serve --control` takes, and the target they name. */
import { InvalidArgumentError, type Command } from 'commander';
import { fsPromises } from '../io/builtins.ts';
import type * as Client from '../live/client.ts';

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

export async function controlTarget(o: ControlFlags): Promise<Client.ControlTarget> {
  if (!o.control) throw new InvalidArgumentError('--control SOCKET is required (the --control of obd serve)');
  return { address: o.control, token: o.controlToken ? (await fsPromises().readFile(o.controlToken, 'utf8')).trim() : undefined };
}

/** Sends one request to the control API; the client (and node:http with it) loads only when a command sends one, not for help. */
export async function controlRequest(...args: Parameters<typeof Client.controlRequest>): ReturnType<typeof Client.controlRequest> {
  return (await import('../live/client.ts')).controlRequest(...args);
}
