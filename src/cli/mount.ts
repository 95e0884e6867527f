/**
 * `obd mount IMAGE... DIR` and `obd umount DIR` (docs/service.md §3): an image's filesystem on
 * a directory, with no kernel module and, without root, no privilege. `obd mount` starts
 * `obd serve` on a private unix socket and nbdfuse on it (the disk as one file), then either
 * a loop device + mount(8) (root) or fuse2fs (anyone who may open /dev/fuse). What it started
 * is recorded in a state directory under $XDG_RUNTIME_DIR (else the temp directory), keyed by
 * DIR, so `obd umount DIR` can stop it all in reverse order: the filesystem first (fuse2fs
 * writes back as it exits), then nbdfuse, then the server, which flushes a writable upper.
 */
import { constants, openSync, closeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { fsPromises } from '../io/builtins.ts';
import { BusyError, NotFoundError, NotSupportedError, ObdError, PermissionError, type Errno } from '../io/errors.ts';
import { addCacheOptions, addRemoteOptions, type CacheFlags, type RemoteFlags } from './remote.ts';
import { output } from './common.ts';

const OBD = fileURLToPath(new URL('./obd.js', import.meta.url));

/** How long each piece may take to come up or go down. */
const READY_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 60_000;

export type MountVia = 'loop' | 'fuse2fs';

/** A mount or unmount step that failed: names the step and what its tool said. */
export class MountError extends ObdError {}

/** `obd serve` refused the image: its own error, passed on with its errno. */
export class ServeStartError extends MountError {
  override readonly errno: Errno;
  constructor(message: string, errno: Errno) {
    super(`obd serve: ${message}`);
    this.errno = errno;
  }
}

interface Proc {
  pid: number;
  /** /proc/PID/stat start time, so a reused pid is never signalled. */
  start: string;
}

interface MountState {
  version: 1;
  dir: string;
  image: string[];
  via: MountVia;
  writable: boolean;
  work: string;
  serve?: Proc;
  nbdfuse?: Proc;
  fuse2fs?: Proc;
  loop?: string;
}

interface MountOptions extends RemoteFlags, CacheFlags {
  writable?: boolean;
  upper?: string[];
  via?: MountVia;
  fsType?: string;
  json?: boolean;
}

export function register(program: Command): void {
  const mount = program
    .command('mount')
    .description('mount an image\'s filesystem on DIR (nbdfuse + loop + mount as root, nbdfuse + fuse2fs without root)')
    .usage('[options] <image...> <dir>')
    .argument('<image...>', 'layer files bottom → top, or one config.v1.json, oci:DIR[:tag] or registry reference; then DIR, the directory to mount on')
    .option('--writable', 'mount read-write, recording writes in the upper layer of --upper')
    .option('--upper <data index...>', 'upper layer: its data and index files (created when both are missing); written only with --writable')
    .addOption(new Option('--via <how>', 'loop device + mount(8) (needs root), or fuse2fs (any user with /dev/fuse; default without root)').choices(['loop', 'fuse2fs']))
    .option('--fs-type <type>', 'filesystem type for mount(8) (default: mount guesses)')
    .option('--json', 'print what was started as JSON');
  addCacheOptions(addRemoteOptions(mount))
    .addHelpText(
      'after',
      `
Examples:
  obd mount base.lsmt app.lsmt /mnt/app                       # read-only
  obd mount localhost:5000/disks/vm1:v1 ~/vm1 --cache-dir ~/.cache/obd
  obd mount base.lsmt ~/rw --writable --upper rw.data rw.index
  obd umount ~/rw                                             # writes are in rw.data/rw.index
Without root, the filesystem must be one fuse2fs reads (ext2/3/4); it is mounted with
fakeroot, so the user may read and change every file in it.`,
    )
    .action(mountCommand);
  program
    .command('umount')
    .description('unmount what `obd mount` mounted on DIR and stop its server (flushing a writable upper)')
    .argument('<dir>', 'the directory given to obd mount')
    .option('--json', 'print what was stopped as JSON')
    .addHelpText('after', '\nExample:\n  obd umount /mnt/app')
    .action(umountCommand);
}

/** Where the state of DIR's mount lives: one directory per mounted DIR, private to the user. */
async function stateDir(dir: string): Promise<string> {
  const base = process.env.XDG_RUNTIME_DIR || os.tmpdir();
  const root = path.join(base, `obd-mounts-${process.getuid?.() ?? 0}`);
  await fsPromises().mkdir(root, { recursive: true, mode: 0o700 });
  const st = await fsPromises().stat(root);
  if (st.uid !== (process.getuid?.() ?? st.uid) || (st.mode & 0o077) !== 0) throw new PermissionError(`${root}: not a private directory of this user (mode ${(st.mode & 0o777).toString(8)})`);
  // node:crypto on use: registering the commands (for `obd --help`) stays cheap.
  const { createHash } = await import('node:crypto');
  return path.join(root, createHash('sha256').update(dir).digest('hex').slice(0, 16));
}

async function mountCommand(args: string[], opts: MountOptions): Promise<void> {
  if (args.length < 2) throw new InvalidArgumentError('give the image and the directory to mount it on: obd mount IMAGE... DIR');
  const image = args.slice(0, -1);
  const dirArg = args.at(-1)!;
  if (opts.upper && opts.upper.length !== 2) throw new InvalidArgumentError('--upper takes two files: DATA INDEX');
  const root = process.getuid?.() === 0;
  const via: MountVia = opts.via ?? (root ? 'loop' : 'fuse2fs');
  if (via === 'loop' && !root) throw new PermissionError('--via loop needs root (a loop device and mount(8)); without root, --via fuse2fs mounts through FUSE');
  const dir = await fsPromises().realpath(dirArg).catch(() => {
    throw new NotFoundError(`${dirArg}: no such directory to mount on`);
  });
  if (!(await fsPromises().stat(dir)).isDirectory()) throw new InvalidArgumentError(`${dirArg}: not a directory`);
  if (await isMountPoint(dir)) throw new BusyError(`${dir}: something is already mounted here`);
  await needTools(via);
  const work = await stateDir(dir);
  if (await readState(work)) throw new BusyError(`${dir}: obd mount has a mount recorded here (${work}); run obd umount ${dir} first`);
  await fsPromises().rm(work, { recursive: true, force: true });
  await fsPromises().mkdir(path.join(work, 'fuse'), { recursive: true, mode: 0o700 });

  const state: MountState = { version: 1, dir, image, via, writable: Boolean(opts.writable), work };
  const { writeFileAtomic } = await import('../io/atomic.ts');
  const save = () => writeFileAtomic(path.join(work, 'state.json'), JSON.stringify(state, null, 2) + '\n');
  try {
    // 1. The server, on a socket only this user can reach.
    const sock = path.join(work, 'serve.sock');
    // The server starts in this directory, so relative layer paths mean what they meant here.
    const serveArgs = [OBD, 'serve', ...image, '--socket', sock, '--json', '--log-format', 'json', ...forwardedFlags(opts)];
    if (opts.upper) serveArgs.push('--upper', path.resolve(opts.upper[0]!), path.resolve(opts.upper[1]!));
    if (opts.writable) serveArgs.push('--writable');
    state.serve = await startDaemon(process.execPath, serveArgs, path.join(work, 'serve.log'));
    await save();
    await waitFor('obd serve', state.serve, path.join(work, 'serve.log'), async () => /"event":"ready"/.test(await fsPromises().readFile(path.join(work, 'serve.log'), 'utf8'))).catch(async (e: unknown) => {
      throw (await serveFailure(path.join(work, 'serve.log'))) ?? e;
    });

    // 2. The disk as a file.
    const disk = path.join(work, 'fuse', 'disk');
    const pidFile = path.join(work, 'nbdfuse.pid');
    state.nbdfuse = await startDaemon('nbdfuse', [...(opts.writable ? [] : ['-r']), '-P', pidFile, disk, '--unix', sock], path.join(work, 'nbdfuse.log'));
    await save();
    await waitFor('nbdfuse', state.nbdfuse, path.join(work, 'nbdfuse.log'), () => fsPromises().access(pidFile).then(() => true, () => false));

    // 3. The filesystem on DIR.
    if (via === 'loop') {
      state.loop = (await tool('losetup', ['--find', '--show', ...(opts.writable ? [] : ['-r']), disk])).trim();
      await save();
      await tool('mount', [...(opts.fsType ? ['-t', opts.fsType] : []), '-o', opts.writable ? 'rw' : 'ro,noload', state.loop, dir]);
    } else {
      const o = ['fakeroot', ...(opts.writable ? [] : ['ro'])].join(',');
      state.fuse2fs = await startDaemon('fuse2fs', ['-f', disk, dir, '-o', o], path.join(work, 'fuse2fs.log'));
      await save();
      await waitFor('fuse2fs', state.fuse2fs, path.join(work, 'fuse2fs.log'), () => isMountPoint(dir));
    }
    await save();
  } catch (e) {
    await teardown(state).catch(() => {});
    await fsPromises().rm(work, { recursive: true, force: true });
    throw e;
  }
  output(opts.json, { dir, via, writable: state.writable, state: work, serve: state.serve?.pid, nbdfuse: state.nbdfuse?.pid, fuse2fs: state.fuse2fs?.pid, loop: state.loop }, () =>
    `obd: mounted ${image.join(' + ')} on ${dir} ${state.writable ? 'read-write' : 'read-only'} via ${via === 'loop' ? `${state.loop} (nbdfuse + loop)` : 'nbdfuse + fuse2fs'}; obd umount ${dir} undoes it`,
  );
}

async function umountCommand(dirArg: string, opts: { json?: boolean }): Promise<void> {
  const dir = await fsPromises().realpath(dirArg).catch(() => path.resolve(dirArg));
  const work = await stateDir(dir);
  const state = await readState(work);
  if (!state) throw new NotFoundError(`${dir}: nothing mounted here by obd mount (no state in ${work})`);
  try {
    await teardown(state);
  } finally {
    // Once nothing it recorded is left running, the state has served its purpose, even when
    // the last step reported a problem (a server that had died): a retry would find nothing.
    if (!state.fuse2fs && !state.loop && !state.nbdfuse && !state.serve) await fsPromises().rm(work, { recursive: true, force: true });
  }
  output(opts.json, { dir, unmounted: true, writable: state.writable }, () => `obd: unmounted ${dir}${state.writable ? '; the upper layer is flushed' : ''}`);
}

/**
 * Stops what the state records, filesystem first. A step that fails (a busy mount) stops the
 * teardown with the state left in place, so nothing below the still-mounted filesystem goes.
 */
async function teardown(state: MountState): Promise<void> {
  const log = (name: string) => path.join(state.work, `${name}.log`);
  const { writeFileAtomic } = await import('../io/atomic.ts');
  const save = () => writeFileAtomic(path.join(state.work, 'state.json'), JSON.stringify(state, null, 2) + '\n').catch(() => {});
  if (state.fuse2fs) {
    if (await isMountPoint(state.dir)) await tool(process.getuid?.() === 0 ? 'umount' : 'fusermount3', process.getuid?.() === 0 ? [state.dir] : ['-u', state.dir]);
    // fuse2fs writes the filesystem back as it exits: the disk must stay until it is gone.
    await waitGone('fuse2fs', state.fuse2fs, log('fuse2fs'));
    state.fuse2fs = undefined;
    await save();
  }
  if (state.loop) {
    if (await isMountPoint(state.dir)) await tool('umount', [state.dir]);
    await tool('losetup', ['-d', state.loop]).catch(() => {});
    state.loop = undefined;
    await save();
  }
  if (state.nbdfuse) {
    const fuseDir = path.join(state.work, 'fuse');
    if (await isMountPoint(fuseDir)) await tool(process.getuid?.() === 0 ? 'umount' : 'fusermount3', process.getuid?.() === 0 ? [fuseDir] : ['-u', fuseDir]);
    await waitGone('nbdfuse', state.nbdfuse, log('nbdfuse'));
    state.nbdfuse = undefined;
    await save();
  }
  if (state.serve) {
    const pid = state.serve.pid;
    const wasRunning = await running(state.serve);
    if (wasRunning) process.kill(pid, 'SIGTERM');
    await waitGone('obd serve', state.serve, log('serve'));
    state.serve = undefined;
    await save();
    const text = await fsPromises().readFile(log('serve'), 'utf8').catch(() => '');
    if (/"event":"ready"/.test(text) && !/"event":"stopped"/.test(text)) {
      const how = wasRunning ? 'did not stop cleanly' : 'had already exited';
      throw new MountError(`obd serve (pid ${pid}) ${how}${state.writable ? '; the upper layer may lack the last writes' : ''}: ${lastLines(text)}`);
    }
  }
}

/** The server flags that shape how the image is opened, passed on to `obd serve`. */
function forwardedFlags(o: MountOptions): string[] {
  const out: string[] = [];
  if (o.plainHttp) out.push('--plain-http');
  if (o.insecure) out.push('--insecure');
  if (o.credsFile) out.push('--creds-file', path.resolve(o.credsFile));
  if (o.proxy) out.push('--proxy', o.proxy);
  if (o.platform) out.push('--platform', o.platform);
  if (o.timeout !== undefined) out.push('--timeout', String(o.timeout));
  if (o.retries !== undefined) out.push('--retries', String(o.retries));
  if (o.cacheDir) out.push('--cache-dir', path.resolve(o.cacheDir));
  if (o.cacheSize !== undefined) out.push('--cache-size', String(o.cacheSize));
  if (o.refill !== undefined) out.push('--refill', String(o.refill));
  if (o.requireVerity) out.push('--require-verity');
  return out;
}

async function needTools(via: MountVia): Promise<void> {
  const need: [string, string][] = [['nbdfuse', 'libnbd-bin']];
  if (via === 'loop') need.push(['losetup', 'mount'], ['mount', 'mount']);
  else need.push(['fuse2fs', 'fuse2fs'], ['fusermount3', 'fuse3']);
  for (const [bin, pkg] of need) {
    if (!(await onPath(bin))) throw new NotSupportedError(`${bin} is not installed (Debian package ${pkg}); obd mount --via ${via} needs it`);
  }
  try {
    closeSync(openSync('/dev/fuse', constants.O_RDWR));
  } catch (e) {
    throw new PermissionError(`/dev/fuse: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}: FUSE is not available to this user (it needs /dev/fuse readable and writable, mode 0666 on Debian)`);
  }
}

async function onPath(bin: string): Promise<boolean> {
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    if (await fsPromises().access(path.join(d, bin), constants.X_OK).then(() => true, () => false)) return true;
  }
  return false;
}

/** Runs a short tool; a failure is a MountError carrying what it printed. */
async function tool(cmd: string, args: string[]): Promise<string> {
  // node:child_process (with node:net and node:dgram, ~3.5 ms) loads on use: `obd --help` registers this area too.
  const { execFile } = await import('node:child_process');
  try {
    return (await promisify(execFile)(cmd, args, { env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } })).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new MountError(`${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`, { cause: e });
  }
}

/** Starts a long-lived process in its own session, its output into `logFile`, not waited for. */
async function startDaemon(cmd: string, args: string[], logFile: string): Promise<Proc> {
  const { spawn } = await import('node:child_process');
  const fd = openSync(logFile, 'a', 0o600);
  try {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd], env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('error', (e) => reject(new MountError(`cannot start ${cmd}: ${e.message}`, { cause: e })));
      child.once('spawn', () => resolve(child.pid!));
    });
    child.unref();
    return { pid, start: await startTime(pid) };
  } finally {
    closeSync(fd);
  }
}

async function waitFor(name: string, p: Proc, logFile: string, ready: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (await ready()) return;
    if (!(await running(p))) throw new MountError(`${name} exited before it was ready: ${lastLines(await fsPromises().readFile(logFile, 'utf8').catch(() => ''))}`);
    if (Date.now() > deadline) throw new MountError(`${name} not ready after ${READY_TIMEOUT_MS / 1000} s: ${lastLines(await fsPromises().readFile(logFile, 'utf8').catch(() => ''))}`);
    await sleep(25);
  }
}

async function waitGone(name: string, p: Proc, logFile: string): Promise<void> {
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (await running(p)) {
    if (Date.now() > deadline) throw new MountError(`${name} (pid ${p.pid}) still running ${STOP_TIMEOUT_MS / 1000} s after it was told to stop: ${lastLines(await fsPromises().readFile(logFile, 'utf8').catch(() => ''))}`);
    await sleep(25);
  }
}

/** Field 22 of /proc/PID/stat (start time in clock ticks), and the state, past the command name. */
async function procStat(pid: number): Promise<{ state: string; start: string } | undefined> {
  const text = await fsPromises().readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!text) return undefined;
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: f[0]!, start: f[19]! };
}

async function startTime(pid: number): Promise<string> {
  return (await procStat(pid))?.start ?? '';
}

/** True while the recorded process (not a later one with its pid, nor a zombie) runs. */
async function running(p: Proc): Promise<boolean> {
  const s = await procStat(p.pid);
  return s !== undefined && s.start === p.start && s.state !== 'Z' && s.state !== 'X';
}

/** True when `dir` is the mount point of something (per /proc/self/mountinfo). */
async function isMountPoint(dir: string): Promise<boolean> {
  const text = await fsPromises().readFile('/proc/self/mountinfo', 'utf8');
  const want = dir.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return text.split('\n').some((l) => l.split(' ')[4] === want);
}

async function readState(work: string): Promise<MountState | undefined> {
  const text = await fsPromises().readFile(path.join(work, 'state.json'), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const s = JSON.parse(text) as MountState;
  if (s.version !== 1) throw new MountError(`${work}/state.json: unknown state version ${s.version}`);
  return s;
}

/** The `{"error": …}` line `obd serve --json` printed when it gave up, as an error. */
async function serveFailure(logFile: string): Promise<Error | undefined> {
  for (const line of (await fsPromises().readFile(logFile, 'utf8').catch(() => '')).split('\n')) {
    if (!line.startsWith('{"error"')) continue;
    try {
      const { error } = JSON.parse(line) as { error: { code: Errno; message: string } };
      return new ServeStartError(error.message, error.code);
    } catch {
      // Not the error line after all.
    }
  }
  return undefined;
}

/** The end of a log, for messages; JSON log lines are shortened to their message. */
function lastLines(text: string, n = 5): string {
  const short = (l: string) => {
    try {
      const o = JSON.parse(l) as { msg?: unknown; event?: unknown; error?: { message?: unknown } };
      return String(o.msg ?? o.error?.message ?? o.event ?? l);
    } catch {
      return l;
    }
  };
  const lines = text.trim().split('\n').slice(-n).map(short);
  return lines.join(' | ').slice(0, 2000) || '(no output)';
}

