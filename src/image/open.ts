/**
 * Opening images: pick the source for each layer, peel wrappers by magic
 * (tar → zfile → LSMT), stack the layers bottom → top, and put a writable upper layer on
 * top when asked. An image is layer files, a config.v1.json, an `oci:DIR[:tag]` layout or
 * a registry reference.
 */
import { chainMembers, checkChain } from './chain.ts';
import { fsPromises } from '../io/builtins.ts';
import { ChainError, InvalidArgumentError, NotFoundError } from '../io/errors.ts';
import { FileSource, isFile } from '../io/file.ts';
import type { BlockDevice, ByteSource } from '../io/types.ts';
import type { SealedLayer } from '../lsmt/sealed.ts';
import { Stack, type StackOptions } from '../lsmt/stack.ts';
import type { DownloadConfig } from './config.ts';
import type { LazyOptions, RemoteOptions } from '../remote/image.ts';
import { parseReference, resolveReference, transportOf, TRANSPORTS } from '../remote/reference.ts';
import type { ImageSources } from './sources.ts';
import type { ReplayResult, TraceRecorder } from '../remote/trace.ts';
import type { LayerPool } from './layer-pool.ts';
import { preloadReaders, probeLayer, type ProbeOptions } from './probe.ts';

/** How a layer blob was wrapped, outermost first (e.g. ['tar', 'zfile', 'lsmt']). */
export type Wrapping = ('tar' | 'zfile' | 'lsmt')[];

export interface OpenedLayer extends SealedLayer {
  readonly wrapping: Wrapping;
  /** Size of the stored blob (compressed and wrapped), as opposed to the decoded layer. */
  readonly storedBytes: number;
}

export interface LayerSourceOptions extends ProbeOptions {
  /** Wraps the decoded LSMT bytes before the layer reads them (e.g. to record a trace). */
  wrapDecoded?: (decoded: ByteSource) => ByteSource;
}

/** Peels tar and zfile wrappers off `src` and opens the LSMT layer inside (see probe.ts). */
export async function openLayerSource(src: ByteSource, opts: LayerSourceOptions = {}): Promise<OpenedLayer> {
  const { layer, wrapping } = await probeLayer(src, opts.wrapDecoded, opts);
  return { ...layer, wrapping, storedBytes: src.size };
}

/** Opens one layer file (plain, zfile-compressed or tar-wrapped). */
export async function openLayerFile(path: string): Promise<OpenedLayer> {
  const src = await FileSource.open(path);
  try {
    return await openLayerSource(src);
  } catch (e) {
    await src.close();
    throw e;
  }
}

/**
 * Opens layers from sources in parallel; on failure closes the sources of those opened
 * (unless `owned` is false: the layers of a pool are closed by releasing their handles).
 */
async function openAll<T>(items: readonly T[], open: (item: T, i: number) => Promise<OpenedLayer>, owned = true): Promise<OpenedLayer[]> {
  const settled = await Promise.allSettled(items.map(open));
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed) {
    if (owned) await Promise.all(settled.map((r) => (r.status === 'fulfilled' ? r.value.source.close() : undefined)));
    throw (failed as PromiseRejectedResult).reason;
  }
  return settled.map((r) => (r as PromiseFulfilledResult<OpenedLayer>).value);
}

/** Opens layer files bottom → top; on failure closes whatever was opened. */
export function openLayerFiles(paths: readonly string[]): Promise<OpenedLayer[]> {
  return openAll(paths, (p) => openLayerFile(p));
}

/** Opens layer files as one read-only stack. */
export async function openStack(paths: readonly string[], opts: StackOptions = {}): Promise<Stack> {
  const layers = await openLayerFiles(paths);
  try {
    return new Stack(layers, opts);
  } catch (e) {
    await Promise.all(layers.map((l) => l.source.close()));
    throw e;
  }
}

export interface ImageOptions extends RemoteOptions, LazyOptions {
  /** Writable layer on top; created (sized like the stack, parent = its top layer) when both files are missing. */
  upper?: { data: string; index: string };
  readOnly?: boolean;
  /**
   * Require each layer's parent uuid (and the upper's) to be the uuid of the layer below it;
   * links that cannot be checked (no uuid) go to onWarning. Default off: a program that
   * stacks layers knows their order; the CLI turns it on.
   */
  verifyChain?: boolean;
  /** Told what could not be checked (e.g. a layer without a uuid); the library prints nothing. */
  onWarning?: (message: string) => void;
  /** Start background downloads of remote layers (with this configuration). */
  download?: DownloadConfig | boolean;
  /** Trace file: an empty file records this run's reads, a recorded trace is replayed. */
  trace?: string;
  /** Called when a trace replay (started in the background) ends. */
  onReplayDone?: (r: ReplayResult) => void;
  /**
   * Share layers, registry clients and caches with every image opened through this pool,
   * and keep decoded blocks under its memory budget (see layer-pool.ts). Closing the device
   * releases what it holds; the pool closes a layer when its last user is gone.
   */
  pool?: LayerPool;
  /**
   * Called once the layers' sources are open and the open waits on their first bytes (for a
   * registry image, its requests are out): work the open does not need can run in that wait.
   */
  onWaiting?: () => void;
}

/**
 * True when `arg` names an image by reference rather than a layer file: a transport
 * (`docker://`, `oci:`, `oci-archive:`, or one the reference parser refuses), an OCI layout
 * directory, or a reference whose first component is a registry host (has a dot or a port, or
 * is localhost — docker's rule), so a mistyped path never becomes a network request.
 */
async function isReference(arg: string): Promise<boolean> {
  if (await isFile(arg)) return false;
  if (transportOf(arg) !== undefined || TRANSPORTS.some((t) => arg.startsWith(t))) return true;
  if ((await resolveReference(arg).catch(() => undefined))?.kind === 'oci') return true;
  const slash = arg.indexOf('/');
  if (slash <= 0) return false;
  const host = arg.slice(0, slash);
  if (!(host.includes('.') || host.includes(':') || host === 'localhost')) return false;
  try {
    parseReference(arg);
    return true;
  } catch {
    return false;
  }
}

/** A place an image can live: whether a command's image arguments name it, and how to open it. */
export interface ImageLocation {
  readonly kind: 'config' | 'reference' | 'layers';
  matches(args: readonly string[]): Promise<boolean>;
  open(args: readonly string[], opts: ImageOptions): Promise<BlockDevice>;
}

/** Every kind of image location, tried in order; the last (layer files) takes what is left. */
export const IMAGE_LOCATIONS: readonly ImageLocation[] = [
  {
    kind: 'config',
    matches: async (args) => args.length === 1 && args[0]!.endsWith('.json') && (await isFile(args[0]!)),
    open: (args, opts) => openSpec(args[0]!, opts, 'config'),
  },
  {
    kind: 'reference',
    matches: async (args) => args.length === 1 && (await isReference(args[0]!)),
    open: (args, opts) => openSpec(args[0]!, opts, 'reference'),
  },
  { kind: 'layers', matches: async () => true, open: openLayerFilesImage },
];

/**
 * Opens an image: layer files bottom → top, or one config.v1.json, `oci:DIR[:tag]` or
 * registry reference (see IMAGE_LOCATIONS). With an upper (given, or from the config) the
 * result is writable unless `readOnly`. Closing the device closes everything it opened.
 */
export async function openImage(args: readonly string[], opts: ImageOptions = {}): Promise<BlockDevice> {
  return (await locateImage(args)).open(args, opts);
}

/** Which kind of location a command's image arguments name: the one decision every command that takes an image makes. */
export async function locateImage(args: readonly string[]): Promise<ImageLocation> {
  if (args.length === 0) throw new InvalidArgumentError('no image given: name layer files, a config.v1.json, oci:DIR or a registry reference');
  for (const loc of IMAGE_LOCATIONS) if (await loc.matches(args)) return loc;
  throw new InvalidArgumentError(`no way to open ${args.join(' ')}`);
}

async function openLayerFilesImage(args: readonly string[], opts: ImageOptions): Promise<BlockDevice> {
  for (const a of args) {
    if (!(await isFile(a))) throw new NotFoundError(`${a}: no such layer file`);
  }
  const stack = opts.pool ? await openPooledStack(args, opts.pool) : await openStack(args);
  try {
    verifyStack(stack, opts);
  } catch (e) {
    await stack.close();
    throw e;
  }
  return withUpper(stack, opts.upper, opts);
}

/** Layer files as a stack whose layers are the pool's: closing it releases them. */
async function openPooledStack(paths: readonly string[], pool: LayerPool): Promise<Stack> {
  const handles: ByteSource[] = [];
  const release = () => Promise.all(handles.map((h) => h.close())).then(() => {});
  try {
    const layers = await openAll(
      paths,
      async (p) => {
        const h = await pool.file(p);
        handles.push(h);
        return pool.layer(h, (src) => openLayerSource(src, { memory: pool.memory }));
      },
      false,
    );
    return new Stack(layers, { ownsSources: false, onClose: release });
  } catch (e) {
    await release();
    throw e;
  }
}

/** The layer in `src`: the pool's shared one when there is a pool, else a private one. */
async function openLayerOf(src: ByteSource, pool: LayerPool | undefined, wrapDecoded: LayerSourceOptions['wrapDecoded']): Promise<OpenedLayer> {
  if (!pool) return openLayerSource(src, { wrapDecoded });
  const layer = await pool.layer(src, (s) => openLayerSource(s, { memory: pool.memory }));
  return wrapDecoded ? { ...layer, source: wrapDecoded(layer.source) } : layer;
}

async function openSpec(spec: string, opts: ImageOptions, kind: 'config' | 'reference'): Promise<BlockDevice> {
  // Loaded here so commands on local files do not load the registry client at start-up.
  const { configSources, referenceSources } = await import('./sources.ts');
  const srcs = await (kind === 'config' ? configSources : referenceSources)(spec, opts);
  // Work for the wait on the first bytes: an image by reference is mostly zfile layers, so
  // their reader's code loads meanwhile. Two turns later, not now: the registry client
  // sends the reads of this turn at the next setImmediate (registry.ts), and loading code
  // first would hold them back.
  setImmediate(() =>
    setImmediate(() => {
      if (kind === 'reference') void preloadReaders();
      opts.onWaiting?.();
    }),
  );
  let recorder: TraceRecorder | undefined;
  let stack: Stack;
  try {
    const tracePath = opts.trace ?? srcs.tracePath;
    // The trace code loads only for a trace.
    const trace = tracePath ? await import('../remote/trace.ts') : undefined;
    const mode = trace && tracePath ? await trace.traceMode(tracePath) : { mode: 'off' as const };
    if (mode.mode === 'record') recorder = new trace!.TraceRecorder();
    const layers = await openAll(
      srcs.layers,
      (s, i) => openLayerOf(s, opts.pool, recorder ? (d) => new trace!.TracingSource(d, i, recorder!) : undefined),
      !opts.pool,
    );
    stack = new Stack(layers, {
      name: srcs.name,
      ownsSources: false,
      onClose: async () => {
        if (recorder && tracePath) {
          const { writeFile } = fsPromises();
          await writeFile(tracePath, recorder.encode());
          await writeFile(`${tracePath}.ok`, '');
        }
        await srcs.close();
      },
    });
    verifyStack(stack, opts);
    if (mode.mode === 'replay') {
      trace!.replayTrace(
        mode.records,
        layers.map((l) => l.source),
        { concurrency: 16 },
      ).then(opts.onReplayDone ?? (() => {}), () => {});
    }
    if (opts.download) srcs.startDownloads(opts.download === true ? undefined : opts.download);
  } catch (e) {
    await srcs.reportResult(e).catch(() => {});
    await srcs.close();
    throw e;
  }
  let dev: BlockDevice;
  try {
    dev = await withUpper(stack, opts.upper ?? srcs.upper, opts);
  } catch (e) {
    await srcs.reportResult(e).catch(() => {});
    throw e;
  }
  try {
    await srcs.reportResult();
  } catch (e) {
    // The image opened but its result file cannot be written: nobody gets the device, so close it.
    await dev.close();
    throw e;
  }
  return dev;
}

/** Puts a writable layer over `stack` (creating it when its files are missing); closes the stack on failure. */
async function withUpper(stack: Stack, upper: ImageSources['upper'], opts: ImageOptions): Promise<BlockDevice> {
  if (!upper) return stack;
  const readOnly = opts.readOnly;
  try {
    // Imported only for an upper layer: read-only stacks load no writable-layer code.
    const { WritableLayer } = await import('../lsmt/writable.ts');
    const [hasData, hasIndex] = await Promise.all([isFile(upper.data), isFile(upper.index)]);
    if (hasData !== hasIndex) {
      throw new ChainError(`writable layer: ${hasData ? upper.data : upper.index} exists but ${hasData ? upper.index : upper.data} does not`);
    }
    if (!hasData) {
      if (readOnly) throw new NotFoundError(`${upper.data}: no such writable layer (it is created only when the image is opened writable)`);
      return await WritableLayer.create(upper.data, upper.index, { virtualSize: stack.size, parentUuid: stack.layers.at(-1)!.uuid, lower: stack });
    }
    const layer = await WritableLayer.open(upper.data, upper.index, { lower: stack, readOnly });
    try {
      if (layer.size !== stack.size) {
        throw new ChainError(
          `${upper.data}: the writable layer's virtual size ${layer.size} differs from the size ${stack.size} of the layers below it (${stack.name}): ` +
            'it was made for another disk',
        );
      }
      if (opts.verifyChain) {
        const top = stack.layers.at(-1)!;
        const warnings = checkChain([{ name: top.source.name, uuid: top.uuid, parentUuid: top.parentUuid }, { name: upper.data, uuid: layer.uuid, parentUuid: layer.parentUuid }]);
        for (const w of warnings) opts.onWarning?.(w);
      }
    } catch (e) {
      await layer.close();
      throw e;
    }
    return layer;
  } catch (e) {
    await stack.close();
    throw e;
  }
}

/** The chain check of ImageOptions.verifyChain, on an opened stack. */
function verifyStack(stack: Stack, opts: ImageOptions): void {
  if (!opts.verifyChain) return;
  for (const w of checkChain(chainMembers(stack.layers))) opts.onWarning?.(w);
}
