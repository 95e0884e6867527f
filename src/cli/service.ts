/**
 * `obd serve` as a service (docs/service.md §2): `--pid-file`, `--max-connections`,
 * `--log-format json`, and systemd socket activation (LISTEN_FDS/LISTEN_PID, the listening
 * socket at fd 3, as sd_listen_fds(3) hands it and qemu-nbd and nbdkit accept). Grouped here
 * so other serve options (TLS, control) are added beside these, not among them.
 */
import { InvalidArgumentError as UsageError, Option, type Command } from 'commander';
import { fsPromises } from '../io/builtins.ts';
import { BusyError, InvalidArgumentError } from '../io/errors.ts';
import type { NbdEvent } from '../nbd/index.ts';
import { intArg } from './common.ts';

export type LogFormat = 'text' | 'json';

export interface ServiceFlags {
  pidFile?: string;
  maxConnections?: number;
  logFormat?: LogFormat;
}

/** The first descriptor a service manager passes (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

export function addServiceOptions(cmd: Command): Command {
  return cmd
    .option('--pid-file <file>', 'write the process id here once listening; removed at exit')
    .addOption(
      new Option('--max-connections <n>', 'clients served at once; one more is refused in the handshake with a message (default: no limit)').argParser((v: string) => {
        const n = intArg(v);
        if (n < 1) throw new UsageError('at least 1');
        return n;
      }),
    )
    .addOption(new Option('--log-format <format>', 'stderr log: text lines, or one JSON object per line').choices(['text', 'json']).default('text'));
}

/** Help text for the service options, appended to `obd serve --help`. */
export const SERVICE_HELP = `
As a service: obd serve accepts a listening socket from systemd (socket activation: LISTEN_PID
is this process, LISTEN_FDS=1, the socket at fd 3) instead of --socket/--listen; SIGTERM
finishes running requests, flushes writable uppers and exits 0.
  systemd-socket-activate -l /run/obd.sock obd serve img.lsmt --log-format json --pid-file /run/obd.pid
  obd serve img.lsmt --listen 10809 --max-connections 8`;

/**
 * The socket a service manager passed, if it passed one to this process: LISTEN_PID must be
 * this process (else the variables were meant for a parent and are ignored, as sd_listen_fds
 * does). The variables are removed so children do not take them for theirs.
 */
export function activatedSocket(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const fds = env.LISTEN_FDS;
  const pid = env.LISTEN_PID;
  if (fds === undefined) return undefined;
  if (pid !== undefined && Number(pid) !== process.pid) return undefined;
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  const n = Number(fds);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`LISTEN_FDS="${fds}": socket activation passes at least one descriptor`);
  if (n > 1) throw new InvalidArgumentError(`LISTEN_FDS=${n}: obd serve listens on one socket; configure the socket unit with one ListenStream=`);
  return LISTEN_FDS_START;
}

/**
 * Writes the pid file (atomically: a reader never sees it half-written) and returns its
 * remover, which removes it only while it still names this process. A file naming another
 * live process is refused: two servers would fight over one pid file.
 */
export async function writePidFile(file: string): Promise<() => Promise<void>> {
  const [{ writeFileAtomic }, { processAlive }, held] = await Promise.all([import('../io/atomic.ts'), import('../io/lock.ts'), readPid(file)]);
  if (held !== undefined && held !== process.pid && processAlive(held)) throw new BusyError(`--pid-file ${file}: names process ${held}, which is running`);
  await writeFileAtomic(file, `${process.pid}\n`);
  return async () => {
    if ((await readPid(file)) === process.pid) await fsPromises().unlink(file).catch(() => {});
  };
}

async function readPid(file: string): Promise<number | undefined> {
  const text = await fsPromises().readFile(file, 'utf8').catch(() => undefined);
  const n = Number(text?.trim());
  return text !== undefined && Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

export type Level = 'info' | 'warn' | 'error';

export interface ServiceLog {
  readonly format: LogFormat;
  log(level: Level, msg: string, fields?: Record<string, unknown>): void;
  /** A connection event (connects, exports chosen, protocol and I/O errors). */
  event(e: NbdEvent): void;
  /** Stops turning other code's stderr lines into JSON. */
  dispose(): void;
}

/**
 * The serve log on stderr. As JSON, every line is one object `{time, level, msg, ...}`:
 * this log's own lines carry their fields, and lines other code writes to stderr (warnings,
 * the signal notice, errors) are wrapped as they pass, so nothing breaks the format.
 */
export function serviceLog(format: LogFormat, textEvent: (e: NbdEvent) => void): ServiceLog {
  if (format === 'text') {
    return {
      format,
      log: (level, msg) => process.stderr.write(`obd: ${level === 'info' ? '' : `${level === 'warn' ? 'warning' : 'error'}: `}${msg}\n`),
      event: textEvent,
      dispose() {},
    };
  }
  const stderr = process.stderr;
  const write = stderr.write.bind(stderr) as (chunk: string) => boolean;
  const line = (level: Level, msg: string, fields?: Record<string, unknown>) => write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n');
  let partial = '';
  const wrapped = (chunk: string | Uint8Array, ...rest: unknown[]): boolean => {
    partial += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
      const text = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      if (text === '') continue;
      const m = /^obd: (?:(warning|error): )?(.*)$/s.exec(text);
      line(m ? (m[1] === 'warning' ? 'warn' : m[1] === 'error' ? 'error' : 'info') : 'error', m ? m[2]! : text);
    }
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  };
  stderr.write = wrapped as typeof stderr.write;
  return {
    format,
    log: line,
    event(e) {
      const { error, type: _type, ...fields } = e as NbdEvent & { error?: unknown };
      const failed = e.type === 'protocol-error' || e.type === 'io-error';
      line(failed ? 'error' : 'info', e.type, { ...fields, ...(error === undefined ? {} : { error: error instanceof Error ? error.message : String(error) }) });
    },
    dispose() {
      if (partial !== '') line('info', partial);
      partial = '';
      stderr.write = write as typeof stderr.write;
    },
  };
}
