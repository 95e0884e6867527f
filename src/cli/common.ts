/**
 * What every `obd` command shares: printing (human or --json), progress bars on a TTY,
 * size parsing, and turning errors into one clear line plus an exit code.
 */
import { fstatSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import { NotFoundError, ObdError } from '../io/errors.ts';
import { statAsync } from '../io/fs-async.ts';
import { parseSize } from '../io/util.ts';
import { removeOnStop } from './outputs.ts';

/** Prints a result: JSON on stdout with --json, else the human text. */
export function output(json: boolean | undefined, value: unknown, human: () => string): void {
  if (json) writeOut(JSON.stringify(value, null, 2) + '\n');
  else {
    const text = printable(human());
    writeOut(text + (text.endsWith('\n') ? '' : '\n'));
  }
}

/**
 * Writes to fd 1 directly: the first use of process.stdout loads node:stream (and node:net for
 * a pipe or a terminal), 2.5-6 ms of CPU of a short command. Node writes stdout synchronously
 * on Linux whatever it is, so the order with other writes holds. Whatever the direct write
 * cannot do (a non-blocking pipe that is full, a closed reader) goes through process.stdout,
 * which handles it as before.
 */
export function writeOut(text: string): void {
  const bytes = Buffer.from(text);
  if (viaStream) return void process.stdout.write(bytes);
  let done = 0;
  try {
    while (done < bytes.length) done += writeSync(1, bytes, done);
  } catch {
    // From now on everything goes through the stream, behind what it may still hold.
    viaStream = true;
    process.stdout.write(bytes.subarray(done));
  }
}

let viaStream = false;

/**
 * Whether fd 1 or 2 may be a terminal: a character device other than Linux's memory devices
 * (major 1: /dev/null, /dev/zero, /dev/full), which is where output thrown away goes. Only
 * then need process.stdout or process.stderr be made (see writeOut) to know for sure: for
 * /dev/null that would load node:stream for nothing.
 */
export function mayBeTerminal(fd: 1 | 2): boolean {
  try {
    const st = fstatSync(fd);
    return st.isCharacterDevice() && deviceMajor(st.rdev) !== MEMORY_DEVICES;
  } catch {
    return false;
  }
}

const MEMORY_DEVICES = 1;

/** The major number of a Linux device number (glibc's gnu_dev_major, bits 8-19 and 32-43). */
function deviceMajor(rdev: number): number {
  return ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
}

/**
 * Human output shows what registries and files say (annotations, media types, user tags):
 * control characters are written as escapes, so a hostile value cannot drive the terminal.
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Commander argument parser for sizes with K/M/G/T suffixes. */
export function sizeArg(text: string): number {
  try {
    return parseSize(text);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

/** Commander argument parser for non-negative integers. */
export function intArg(text: string): number {
  const v = Number(text);
  if (!Number.isSafeInteger(v) || v < 0) throw new InvalidArgumentError(`not a whole number: ${text}`);
  return v;
}

export interface Progress {
  update(done: number): void;
  stop(): void;
}

/** A progress bar on stderr when it is a terminal (and not --json); silent otherwise. */
export function progress(label: string, total: number, enabled = true): Progress {
  if (!enabled || total <= 0 || !mayBeTerminal(2) || !process.stderr.isTTY) return { update() {}, stop() {} };
  // Loaded only when a bar is drawn: it is a good part of a short command's start-up.
  const cliProgress = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {value_h}/{total_h} | {speed} | ETA {eta_formatted}`,
      hideCursor: true,
      barsize: 30,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  const t0 = Date.now();
  const human = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  bar.start(total, 0, { value_h: human(0), total_h: human(total), speed: '' });
  return {
    update(done: number) {
      const secs = (Date.now() - t0) / 1000;
      bar.update(done, { value_h: human(done), speed: secs > 0 ? `${(done / 2 ** 20 / secs).toFixed(0)} MiB/s` : '' });
    },
    stop() {
      bar.stop();
    },
  };
}

/** A progress callback that draws a bar once the total is known; stop() removes it. */
export function progressBar(label: string, enabled: boolean): { onProgress: (done: number, total: number) => void; stop: () => void } {
  let p: Progress | undefined;
  return {
    onProgress(done, total) {
      p ??= progress(label, total, enabled);
      p.update(done);
    },
    stop() {
      p?.stop();
    },
  };
}

/**
 * Writes a file through a temporary name, fsyncs it and renames it into place only on success,
 * so a failed or killed command leaves nothing half-written under the final name; the next
 * run removes a killed run's temp (src/io/atomic.ts).
 */
export async function atomicOutput<T>(finalPath: string, write: (tmpPath: string) => Promise<T>): Promise<T> {
  const dir = path.dirname(path.resolve(finalPath));
  if (!(await statAsync(dir).then((s) => s.isDirectory(), () => false))) throw new NotFoundError(`${finalPath}: no such directory ${dir} to write it in`);
  // Ctrl-C removes the temp; writeAtomic removes it on failure and renames it on success. The
  // handler stays until the rename is done: a signal while the temp is being committed would
  // otherwise kill the process with the temp still there.
  let untrack: (() => void) | undefined;
  const { writeAtomic } = await import('../io/atomic.ts');
  try {
    return await writeAtomic(finalPath, (tmp) => {
      untrack = removeOnStop(tmp);
      return write(tmp);
    });
  } finally {
    untrack?.();
  }
}

/**
 * Resolves on the first SIGINT or SIGTERM, after saying on stderr what happens next; a second
 * signal exits at once. dispose() removes the handlers once shutdown is over.
 */
export function onStopSignal(doing: string): { stopped: Promise<NodeJS.Signals>; dispose(): void } {
  let stopping = false;
  let resolve!: (s: NodeJS.Signals) => void;
  const stopped = new Promise<NodeJS.Signals>((r) => (resolve = r));
  const handler = (signal: NodeJS.Signals): void => {
    if (stopping) {
      process.stderr.write(`obd: ${signal} again, exiting without waiting\n`);
      process.exit(130);
    }
    stopping = true;
    process.stderr.write(`obd: ${signal}: ${doing}\n`);
    resolve(signal);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    stopped,
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/** True when the command line asks for JSON: then failures are JSON on stdout too. */
export function wantsJson(argv: readonly string[] = process.argv): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).includes('--json');
}

/** A failure as `{"error": {code, type, message, file?, offset?, url?}}`; code is the errno-style name. */
export function errorJson(e: unknown): { error: Record<string, unknown> } {
  const err = e instanceof Error ? e : new Error(String(e));
  const x = err as Error & { errno?: unknown; code?: unknown; file?: unknown; offset?: unknown; url?: unknown };
  const usage = typeof x.code === 'string' && x.code.startsWith('commander.');
  const out: Record<string, unknown> = {
    code: err instanceof ObdError ? err.errno : usage ? 'EINVAL' : typeof x.code === 'string' ? x.code : 'EIO',
    type: usage ? x.code : err.name,
    message: err.message.replace(/^error: /, ''),
  };
  for (const k of ['file', 'offset', 'url'] as const) if (x[k] !== undefined) out[k] = x[k];
  return { error: out };
}

/**
 * One line for the user (or the JSON error with --json); a stack only for unexpected failures
 * or with OBD_DEBUG set. Returns the exit code: 1 for expected failures, 2 for bugs.
 */
export function reportError(e: unknown, json = wantsJson()): number {
  const err = e as Error;
  const expected = err instanceof ObdError || (typeof (err as NodeJS.ErrnoException)?.code === 'string' && !!err.message);
  if (json) {
    process.stdout.write(JSON.stringify(errorJson(err)) + '\n');
    if (process.env.OBD_DEBUG || !expected) console.error(err);
  } else if (process.env.OBD_DEBUG) console.error(err);
  else if (expected) console.error(`obd: ${err.message}`);
  else console.error(err);
  return expected ? 1 : 2;
}
