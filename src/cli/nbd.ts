/** `obd serve`: export images over NBD until SIGINT/SIGTERM. */
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { fsPromises } from '../io/builtins.ts';
import { formatSize } from '../io/util.ts';
import type { BlockDevice } from '../io/types.ts';
import type { NbdAddress, NbdEvent, NbdExportOptions } from '../nbd/index.ts';
import type { ImageOptions } from '../image/open.ts';
import { addCacheOptions, addRemoteOptions, cacheOptions, remoteOptions, type CacheFlags, type RemoteFlags } from './remote.ts';
import { NO_VERIFY_CHAIN, VERIFY_CHAIN, warn, withChainHint } from './chain.ts';
import { onStopSignal, sizeArg } from './common.ts';
import { argList, checkOutputs } from './outputs.ts';
import { activatedSocket, addServiceOptions, SERVICE_HELP, serviceLog, writePidFile, type ServiceFlags, type ServiceLog } from './service.ts';
import { addTlsOptions, clientUri, tlsPlan, TLS_EXAMPLES, type TlsFlags } from './nbd-tls.ts';
import { isFile } from '../io/file.ts';
import type { LiveDisk } from '../live/disk.ts';
import type { ControlAddress, ControlServer } from '../live/control.ts';
import { startHeapTrim } from '../runtime/heap-trim.ts';

import { addShareOptions, openSharing, SHARE_EXAMPLES, type ShareFlags } from './serve-share.ts';

interface ServeOptions extends RemoteFlags, CacheFlags, ServiceFlags, TlsFlags, ShareFlags {
  download?: boolean;
  downloadRate?: number;
  trace?: string;
  verifyChain?: boolean;
  socket?: string;
  listen?: { host: string; port: number };
  export?: string[];
  writable?: boolean;
  upper?: string[];
  readOnly?: boolean;
  json?: boolean;
  verbose?: boolean;
  control?: string;
  controlToken?: string;
  state?: string;
  snapshotRate?: number;
}

export function register(program: Command): void {
  const cmd = program
    .command('serve')
    .description('serve images over NBD (unix socket or TCP) until Ctrl-C')
    .argument('[image...]', 'the main export: layer files bottom → top, or one config.v1.json, oci:DIR[:tag] or registry reference (read lazily)')
    .option('--socket <path>', 'listen on this unix socket (default: a new one in the temp directory)')
    .option('--listen <[host:]port>', 'listen on TCP instead: a bare port binds 127.0.0.1 (e.g. 10809), or give HOST:PORT (0.0.0.0:10809)', hostPort)
    .option(
      '--export <name[=image,...]>',
      'without "=": the name of the main export (default ""); with "=": one more read-only export made of the ' +
        'comma-separated layer files (or config.v1.json). Repeatable',
      (v: string, acc: string[] | undefined) => [...(acc ?? []), v],
    )
    .option('--writable', 'serve the main export writable, through the upper layer of --upper (or of the image config)')
    .option('--upper <data index...>', 'writable upper layer: its data and index files (created when both are missing)')
    .option('--read-only', 'serve the main export read-only even when --upper is given')
    .option(...VERIFY_CHAIN)
    .option(...NO_VERIFY_CHAIN)
    .option('--download', 'download remote layers in the background; reads switch to the local copy once its digest checks')
    .addOption(new Option('--download-rate <MiB/s>', 'background download rate limit').argParser(Number).default(100))
    .option('--trace <file>', 'prefetch trace: an empty file records this run\'s reads (written at exit), a recorded one is replayed to warm the cache')
    .option('--control <socket|[host:]port>', 'serve the control API (snapshot, compact, resize, stats; docs/control-api.md) on this unix socket (mode 0600), or on loopback TCP with --control-token')
    .option('--control-token <file>', 'file holding the bearer token the TCP control API requires')
    .option('--snapshot-rate <bytes/s>', 'with --control: pace of a snapshot\'s background commit, hashing and upload (K/M/G suffixes, per second; default 100M; 0: unlimited); the snapshot API\'s "rate" overrides it', sizeArg)
    .option('--state <file>', 'with --control: the config.v1.json recording the live stack (default: <upper data>.config.v1.json; for a config.v1.json image, that file); a restart with the same arguments serves what it records')
    .option('--json', 'report on stdout as JSON lines: ready (once listening), error, stopping, stopped')
    .option('-v, --verbose', 'log connections and errors on stderr');
  addShareOptions(addTlsOptions(addServiceOptions(addCacheOptions(addRemoteOptions(cmd)))), hostPort)
    .addHelpText(
      'after',
      `
The empty export name selects the main export, so clients need no name when there is one.
Examples:
  obd serve base.lsmt app.lsmt --socket /tmp/obd.sock
  qemu-img info "nbd+unix:///?socket=/tmp/obd.sock"
  nbdinfo --map=qemu:allocation-depth "nbd+unix:///?socket=/tmp/obd.sock"
  obd serve base.lsmt --export base --export app=base.lsmt,app.lsmt --listen 10809
  obd serve base.lsmt app.lsmt --writable --upper rw.data rw.index --socket /tmp/obd.sock
  obd serve oci:./images:v1 --socket /tmp/obd.sock
  obd serve localhost:5000/disks/vm1:v1 --cache-dir /var/cache/obd --writable --upper rw.data rw.index
  obd serve base.lsmt --writable --upper rw.data rw.index --socket /tmp/vm.sock --control /tmp/vm.ctl
  obd snapshot --control /tmp/vm.ctl --commit snap1.lsmt --push localhost:5000/disks/vm:snap1
${SHARE_EXAMPLES}${SERVICE_HELP}
Over TLS (STARTTLS, as qemu-nbd and nbdkit):
${TLS_EXAMPLES}
`,
    )
    .action(serveAction);
}

/** `PORT` (on 127.0.0.1, so nothing is exposed by accident), `HOST:PORT` or `[IPv6]:PORT`. */
function hostPort(text: string): { host: string; port: number } {
  const m = /^(?:(?:\[([^\]]+)\]|([^:]*)):)?(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new InvalidArgumentError(`expected PORT or HOST:PORT, e.g. 10809 or 0.0.0.0:10809 (got "${text}")`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** With --log-format json, a failure is a JSON log line too (exit 1), not a bare text line. */
async function serveAction(images: string[], opts: ServeOptions): Promise<void> {
  const log = serviceLog(opts.logFormat ?? 'text', logEvent);
  try {
    await serve(images, opts, log);
  } catch (e) {
    if (log.format === 'text' || opts.json) throw e;
    const err = e as Error;
    log.log('error', err.message, { type: err.name, code: (err as { errno?: string }).errno ?? (err as { code?: string }).code });
    process.exitCode = 1;
  } finally {
    log.dispose();
  }
}

async function serve(images: string[], opts: ServeOptions, log: ServiceLog): Promise<void> {
  if (opts.socket && opts.listen) throw new InvalidArgumentError('give --socket or --listen, not both');
  const activated = activatedSocket();
  if (activated !== undefined && (opts.socket || opts.listen)) {
    throw new InvalidArgumentError('the service manager passed a listening socket (LISTEN_FDS): leave out --socket and --listen');
  }
  const named = (opts.export ?? []).filter((e) => !e.includes('='));
  const extra = (opts.export ?? []).filter((e) => e.includes('='));
  if (named.length > 1) throw new InvalidArgumentError(`the main export has one name; got ${named.map((n) => `"${n}"`).join(', ')}`);
  if (named.length === 1 && images.length === 0) throw new InvalidArgumentError('--export NAME names the main export, but no image was given');
  if (images.length === 0 && extra.length === 0) throw new InvalidArgumentError('nothing to serve: give an image, or --export NAME=IMAGE');
  if (opts.upper && opts.upper.length !== 2) throw new InvalidArgumentError('--upper takes two files: DATA INDEX');
  if ((opts.writable || opts.upper) && images.length === 0) throw new InvalidArgumentError('--writable/--upper apply to the main export: give its image');
  const tlsp = await tlsPlan(opts, opts.listen, Boolean(opts.writable) && !opts.readOnly);

  // Loaded here, not at the top, so registering the command (for `obd --help`) is cheap.
  const { openImage } = await import('../image/open.ts');
  // The server's code loads while an image waits on its first bytes (a registry's answers), not before the open.
  const loadServer = () => import('../nbd/server.ts');
  // One pool for every export: a layer several of them stack is opened once.
  const sharing = await openSharing(opts, Boolean(opts.control));
  const imageOpts: ImageOptions = {
    ...remoteOptions(opts),
    ...cacheOptions(opts),
    ...sharing.imageOptions,
    verifyChain: opts.verifyChain !== false,
    onWarning: warn,
    download: opts.download ? { maxMBps: opts.downloadRate } : undefined,
    trace: opts.trace,
    onWaiting: () => void loadServer().catch(() => {}),
  };
  const devices: { close(): Promise<void> }[] = [];
  const table = new Map<string, NbdExportOptions>();
  const mainName = named[0] ?? '';
  const live = new Map<string, LiveDisk>();
  /** The exports opened at start (live disks aside), by name. */
  const started = new Map<string, BlockDevice>();
  if (opts.controlToken && !opts.control) throw new InvalidArgumentError('--control-token goes with --control');
  if (opts.state && !opts.control) throw new InvalidArgumentError('--state goes with --control');
  const token = opts.controlToken ? (await fsPromises().readFile(opts.controlToken, 'utf8')).trim() : undefined;
  if (opts.controlToken && !token) throw new InvalidArgumentError(`${opts.controlToken}: the token file is empty`);
  // What opens and bursts of reads free goes back to the system (a no-op off glibc): opening
  // many remote layers at once is when a server's memory peaks.
  const trimmer = startHeapTrim();
  try {
    if (images.length > 0 && opts.control && opts.writable && !opts.readOnly) {
      const { LiveDisk } = await import('../live/disk.ts');
      const disk = await openLive(LiveDisk, images, opts, imageOpts);
      live.set(mainName, disk);
      devices.push(disk);
      table.set(mainName, { device: disk.device, readOnly: false, description: `live: ${path.basename(disk.recordPath)}` });
    } else if (images.length > 0) {
      const upper = opts.upper ? { data: opts.upper[0]!, index: opts.upper[1]! } : undefined;
      const readOnly = Boolean(opts.readOnly) || !opts.writable;
      if (upper) await checkOutputs(argList([upper.data, upper.index], '--upper file'), argList(images, '<image>'), true);
      const dev = await withChainHint(() => openImage(images, { ...imageOpts, upper, readOnly }));
      devices.push(dev);
      started.set(mainName, dev);
      if (!readOnly && !dev.writable) {
        throw new InvalidArgumentError(`--writable: ${dev.name} has no writable layer to record writes in; --upper DATA INDEX is missing`);
      }
      table.set(mainName, { device: sharing.serve(mainName, dev), readOnly, tlsOnly: tlsp.writableTlsOnly, description: images.map((p) => path.basename(p)).join(' + ') });
    }
    for (const spec of extra) {
      const eq = spec.indexOf('=');
      const name = spec.slice(0, eq);
      const files = spec.slice(eq + 1).split(',').filter(Boolean);
      if (files.length === 0) throw new InvalidArgumentError(`--export ${spec}: no image after "="`);
      if (table.has(name)) throw new InvalidArgumentError(`export "${name}" is given twice`);
      const dev = await withChainHint(() => openImage(files, { ...imageOpts, readOnly: true, trace: undefined }));
      devices.push(dev);
      started.set(name, dev);
      table.set(name, { device: sharing.serve(name, dev), readOnly: true, description: files.map((p) => path.basename(p)).join(' + ') });
    }
  } catch (e) {
    trimmer.stop();
    await Promise.allSettled(devices.map((d) => d.close()));
    await sharing.close();
    throw e;
  }

  const { NbdServer } = await loadServer();
  const server = new NbdServer({
    exports: table,
    defaultExport: images.length > 0 ? mainName : undefined,
    tls: tlsp.tls,
    onEvent: opts.json ? (e) => jsonEvent(e, opts.verbose, log) : opts.verbose ? (e) => log.event(e) : undefined,
    maxConnections: opts.maxConnections,
  });
  const addr: NbdAddress = opts.listen ?? { socket: opts.socket ?? path.join(os.tmpdir(), `obd-${process.pid}.sock`) };
  let metrics: { host: string; port: number } | undefined;
  let removePidFile: (() => Promise<void>) | undefined;
  let control: ControlServer | undefined;
  try {
    await server.listen(activated !== undefined ? { fd: activated } : addr);
    if (opts.pidFile) removePidFile = await writePidFile(opts.pidFile);
    if (opts.control) {
      const [{ ControlServer }, { ServedExports }] = await Promise.all([import('../live/control.ts'), import('../image/served.ts')]);
      // Exports added and removed through the control API; those the server started with can be removed too.
      const served = new ServedExports(server, { ...imageOpts, pool: sharing.imageOptions.pool, trace: undefined }, { wrap: sharing.serve, forget: sharing.forget });
      for (const [name, dev] of started) {
        served.adopt(name, dev);
        devices.splice(devices.indexOf(dev), 1);
      }
      devices.push(served);
      control = new ControlServer({
        attach: (name, image, o) => served.attach(name, image, o),
        detach: (name) => served.detach(name),
        metrics: sharing.metricsText,
        disks: live,
        exports: () => server.exports.map((e) => ({ name: e.name, size: e.size, readOnly: e.readOnly, layers: e.layers })),
        connections: () => server.connectionCount,
        token,
        pushOptions: remoteOptions(opts),
        onError: opts.verbose ? (e) => process.stderr.write(`obd: control ${e.method} ${e.path}: ${e.status} ${e.message}\n`) : undefined,
      });
      await control.listen(controlAddress(opts.control));
    }
    metrics = await sharing.listen(() => server.connectionCount);
  } catch (e) {
    trimmer.stop();
    await server.close().catch(() => {});
    await Promise.allSettled(devices.map((d) => d.close()));
    await removePidFile?.();
    await sharing.close();
    throw e;
  }

  const listening = server.address!;
  const exports = server.exports.map((e) => ({ ...e, uri: clientUri(server.uri(e.name), tlsp.uriHint) }));
  const where = 'socket' in listening ? `unix socket ${listening.socket}` : `${listening.host}:${listening.port}`;
  for (const w of tlsp.warnings) warn(w);
  const tlsNote = tlsp.tls ? `, TLS ${tlsp.tls.mode === 'require' ? 'required' : 'offered'} (${tlsp.tls.credentials.kind === 'psk' ? 'PSK' : 'X.509'})` : '';
  const lines = [`obd: serving ${exports.length === 1 ? 'one export' : `${exports.length} exports`} on ${where}${tlsNote}`];
  if (tlsp.writableTlsOnly) lines.push('obd: the writable export is offered only to clients that start TLS (--allow-insecure-writes lifts this)');
  for (const e of exports) {
    const name = e.name === '' ? '(default)' : e.name;
    lines.push(`  ${name}  ${formatSize(e.size)}  ${e.layers} layer${e.layers === 1 ? '' : 's'}  ${e.readOnly ? 'read-only' : 'writable'}  ${e.uri}`);
  }
  if (control) {
    const c = control.address!;
    lines.push(`obd: control API on ${'socket' in c ? c.socket : `http://${c.host}:${c.port}`} (obd snapshot --control …)`);
  }
  if (metrics) lines.push(`obd: metrics at http://${metrics.host.includes(':') ? `[${metrics.host}]` : metrics.host}:${metrics.port}/metrics`);
  lines.push('obd: look at it with:', ...inspectCommands(exports[0]!.uri).map((c) => `  ${c}`));
  lines.push('obd: press Ctrl-C to stop');
  // Handlers first: a client may signal the moment it reads the ready line.
  const signals = onStopSignal('finishing running requests and closing');
  const pipeClosed = onOutputClosed();
  const controlInfo = control ? { control: control.address } : {};
  if (log.format === 'text') process.stderr.write(lines.join('\n') + '\n');
  else log.log('info', 'serving', { ...listening, activated: activated !== undefined, pid: process.pid, maxConnections: opts.maxConnections, tls: server.tlsMode, exports, ...controlInfo });
  if (opts.json) process.stdout.write(JSON.stringify({ event: 'ready', ...listening, pid: process.pid, tls: server.tlsMode, exports, ...controlInfo, ...(metrics ? { metrics } : {}) }) + '\n');
  const signal = await Promise.race([signals.stopped, pipeClosed]);
  trimmer.stop();
  if (opts.json) process.stdout.write(JSON.stringify({ event: 'stopping', signal }) + '\n');
  try {
    // A snapshot committing or pushing is cancelled (its request fails) rather than awaited.
    await Promise.all([...live.values()].map((d) => d.stopBackground()));
    await control?.close();
    await server.close();
  } finally {
    await Promise.allSettled(devices.map((d) => d.close()));
    // Snapshots compress on the shared worker pool: no worker may outlive the server.
    if (live.size > 0) await (await import('../zfile/compress-pool.ts')).CompressPool.closeShared();
    await removePidFile?.();
    await sharing.close();
    signals.dispose();
  }
  if (log.format === 'json') log.log('info', 'stopped', { signal });
  if (opts.json) process.stdout.write(JSON.stringify({ event: 'stopped' }) + '\n');
}

/** `--control`: a socket path, or `PORT` / `HOST:PORT` for loopback TCP. */
function controlAddress(text: string): ControlAddress {
  if (/^(?:(?:\[[^\]]+\]|[^:/]*):)?\d+$/.test(text)) return hostPort(text);
  return { socket: text };
}

/**
 * Opens the main export as a live disk: from its record (--state, or the config.v1.json
 * image itself) when there is one, else from the layer files and --upper, recording them.
 */
async function openLive(Live: typeof LiveDisk, images: string[], opts: ServeOptions, imageOpts: ImageOptions): Promise<LiveDisk> {
  const isConfig = images.length === 1 && images[0]!.endsWith('.json');
  if (isConfig) {
    if (opts.state && path.resolve(opts.state) !== path.resolve(images[0]!)) throw new InvalidArgumentError('a config.v1.json image is its own record: leave out --state');
    return Live.open({ record: images[0]!, imageOptions: imageOpts, snapshotRate: opts.snapshotRate });
  }
  if (!opts.upper) throw new InvalidArgumentError('--control on layer files needs --upper DATA INDEX (the writable layer snapshots seal)');
  for (const a of images) {
    if (!(await isFile(a))) throw new InvalidArgumentError(`${a}: --control serves layer files or a config.v1.json (not a registry reference: obd pull it first)`);
  }
  const record = opts.state ?? `${opts.upper[0]}.config.v1.json`;
  await checkOutputs(argList([opts.upper[0]!, opts.upper[1]!], '--upper file'), argList(images, '<image>'), true);
  if (await isFile(record)) {
    const { readRecord } = await import('../live/record.ts');
    const r = await readRecord(record);
    const given = images.map((i) => path.resolve(i));
    const recorded = r.lowers.slice(0, given.length).map((l) => ('file' in l ? l.file : undefined));
    if (given.some((g, i) => g !== recorded[i])) warn(`${record}: serving the stack it records, whose bottom layers are not the ${given.length} given`);
  }
  return Live.open({ record, initial: { layers: images, upper: { data: opts.upper[0]!, index: opts.upper[1]! } }, imageOptions: imageOpts, snapshotRate: opts.snapshotRate });
}

/**
 * Resolves when stdout or stderr turns out to be a closed pipe (EPIPE on a write, e.g.
 * `obd serve -v 2>&1 | head -1` once head has exited), so the server stops and removes its
 * socket and lock as on SIGTERM instead of dying on the write error. Linux tells a writer
 * that its pipe has no reader only when it writes: the next log, ready or shutdown line
 * finds it. The handlers stay until the process ends, as later writes fail the same way.
 */
function onOutputClosed(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const closed = (e: NodeJS.ErrnoException): void => {
      // Reported as the signal a C server would have died of.
      if (e.code === 'EPIPE') resolve('SIGPIPE');
    };
    process.stdout.on('error', closed);
    process.stderr.on('error', closed);
  });
}

/**
 * Shell commands that look at a served export: metadata, layer provenance, a full copy, and
 * the kernel path (nbdfuse + loop device + mount). Used by `obd serve` and `obd demo`.
 */
export function inspectCommands(uri: string, dir = '/tmp/obd'): string[] {
  const q = `'${uri.replace(/'/g, `'\\''`)}'`;
  return [
    `qemu-img info ${q}`,
    `nbdinfo --map=qemu:allocation-depth ${q}     # which layer backs each extent`,
    `nbdcopy ${q} - | sha256sum`,
    `mkdir -p ${dir}/fuse ${dir}/mnt && nbdfuse -r ${dir}/fuse/disk ${q} &     # the kernel path (root)`,
    `sudo mount -o ro,noload "$(sudo losetup -r -f --show ${dir}/fuse/disk)" ${dir}/mnt && ls ${dir}/mnt`,
    `sudo umount ${dir}/mnt && sudo umount ${dir}/fuse     # detach again`,
  ];
}

/** `serve --json`: failures always, connections too with --verbose; stderr keeps the human log. */
function jsonEvent(e: NbdEvent, verbose: boolean | undefined, log: ServiceLog): void {
  if (verbose) log.event(e);
  const failed = e.type === 'protocol-error' || e.type === 'io-error';
  if (!failed && !verbose) return;
  const { error, ...rest } = e as NbdEvent & { error?: unknown };
  const line = failed ? { event: 'error', ...rest, ...(error === undefined ? {} : { message: error instanceof Error ? error.message : String(error) }) } : { event: e.type, ...rest };
  process.stdout.write(JSON.stringify(line) + '\n');
}

function logEvent(e: NbdEvent): void {
  const id = `[${e.connection}]`;
  switch (e.type) {
    case 'connect':
      process.stderr.write(`obd: ${id} connected (${e.remote})\n`);
      break;
    case 'tls':
      process.stderr.write(`obd: ${id} TLS: ${e.peer}\n`);
      break;
    case 'ready':
      process.stderr.write(`obd: ${id} export "${e.export}"${e.structured ? ', structured replies' : ''}${e.tls ? ', TLS' : ''}\n`);
      break;
    case 'disconnect':
      process.stderr.write(`obd: ${id} disconnected: ${e.reason}\n`);
      break;
    case 'protocol-error':
      process.stderr.write(`obd: ${id} protocol error: ${e.message}\n`);
      break;
    case 'io-error':
      process.stderr.write(`obd: ${id} ${e.command} [${e.offset}, +${e.length}) failed: ${e.error instanceof Error ? e.error.message : String(e.error)}\n`);
      break;
  }
}
