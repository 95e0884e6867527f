/**
 * A live disk (docs/control-api.md §3): a writable upper over a stack of lowers, served
 * through an indirection device, whose stack changes while clients stay connected.
 *
 * Snapshot, in order (each step durable before the next):
 *   1. create a new empty upper (fresh uuid, parent = the old upper's uuid), unrecorded;
 *   2. hold writes at the top and wait for running ones; flush the old upper;
 *   3. record lowers + old upper (read-only) + new upper, by atomic rename;
 *   4. point the top at the new upper and let writes through  ← the only pause (2–4);
 *   5. in the background of I/O: merge the old upper's index into the lowers' lookup;
 *      commit the old upper into a sealed layer (uuid kept, so the new upper's parent
 *      still names it), record the stack with it in the old upper's place, switch the new
 *      upper's lower to it, close and (if a snapshot made them) delete the old upper's
 *      files; then push lowers + the new layer.
 * A crash before 3 restarts on the old record (the old upper was flushed, the new files are
 * unreferenced); after 3 on the new one, whose upper holds every write acknowledged since.
 */
import { randomUUID } from 'node:crypto';
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { removeStaleTemps, tempPath } from '../io/atomic.ts';
import { BusyError, InvalidArgumentError, NotSupportedError } from '../io/errors.ts';
import { isFile } from '../io/file.ts';
import { lockHolder } from '../io/lock.ts';
import { runSliced } from '../io/slice.ts';
import { HT_SPACE } from '../lsmt/format.ts';
import type { BlockDevice } from '../io/types.ts';
import type { Layer } from '../lsmt/layer.ts';
import { IndexLookup } from '../lsmt/lookup.ts';
import { Stack } from '../lsmt/stack.ts';
import type { MappingTable } from '../lsmt/table.ts';
import { WritableLayer, type WritableStats } from '../lsmt/writable.ts';
import type { ImageOptions } from '../image/open.ts';
import type { LowerConfig } from '../image/config.ts';
import type { PushResult } from '../image/push.ts';
import { isWritableLower, readRecord, writeRecord, type StackRecord, type UpperRecord } from './record.ts';
import { BackgroundThread } from './background.ts';
import type { CommitJobResult, PlainPushOptions } from './jobs.ts';
import { overlaySteps } from './overlay.ts';
import { SwitchDevice } from './switch.ts';

/**
 * Default pace of a snapshot's background work, in bytes per second through each of its
 * passes (commit, hash, upload): 100 MiB/s. Measured on 2 shared CPUs (docs/benchmarks.md,
 * live snapshots), it cut the guest's write p99 at queue depth 1 from 2.5–3.7× to 1.9–2.3×
 * of no snapshots at the same IOPS, without making snapshots less frequent there; a host
 * with idle cores and a fast link to its registry may want 0 (unlimited).
 */
export const DEFAULT_SNAPSHOT_RATE = 100 << 20;

type LiveLayer =
  | { kind: 'sealed'; entry: LowerConfig; layer: Layer; close: () => Promise<void> }
  | { kind: 'writable'; entry: LowerConfig & { data: string; index: string; obdSnapshot?: boolean }; layer: Layer; rw: WritableLayer };

export interface SnapshotOptions {
  /** Commit the sealed upper into this file (relative: to the upper's directory; default with push: next to the upper). */
  commit?: string;
  /** Compress the committed layer (zfile). */
  compress?: 'lz4' | 'zstd';
  /** User tag of the committed layer. */
  tag?: string;
  /** Push lowers + the new layer to this image reference. */
  push?: string;
  pushOptions?: PlainPushOptions;
  /** Bytes per second the background commit and push move (0: unlimited; default: the disk's). */
  rate?: number;
  /** Told when each phase ends (switch, commit, push). */
  onPhase?: (phase: 'switched' | 'committed' | 'pushed', detail: Record<string, unknown>) => void;
}

export interface SnapshotResult {
  /** The sealed layer: the old upper's uuid, its parent the layer below it. */
  layer: { uuid: string; parentUuid: string; data: string; index: string; file?: string };
  upper: { uuid: string; parentUuid: string; data: string; index: string };
  /** How long writes were held (ms). */
  pauseMs: number;
  commit?: { file: string; bytes: number; dataBytes: number; ms: number };
  push?: { reference: string; digest: string; uploaded: number; layersUploaded: number; ms: number };
  record: string;
}

export interface LayerDescription {
  kind: 'sealed' | 'writable';
  file?: string;
  data?: string;
  index?: string;
  digest?: string;
  uuid: string;
  parentUuid: string;
}

/** What the formats side provides on a writable upper (online compaction and resize). */
interface OnlineUpper {
  compact?(opts?: { onProgress?: (done: number, total: number) => void }): Promise<{ dataBytesBefore: number; dataBytesAfter: number; reclaimed: number }>;
  resize?(size: number, opts?: { shrink?: boolean }): Promise<void>;
}

export interface LiveOpenOptions {
  /** Where the stack is recorded (a config.v1.json). */
  record: string;
  /** First start only (no record yet): layer files bottom → top and the upper's files. */
  initial?: { layers: string[]; upper: { data: string; index: string } };
  imageOptions?: ImageOptions;
  /** Default pace of snapshots' background work (bytes per second, 0: unlimited). */
  snapshotRate?: number;
}

export class LiveDisk {
  /** What the NBD server exports: every request goes to the current upper. */
  readonly device: SwitchDevice;
  readonly recordPath: string;
  #record: StackRecord;
  #layers: LiveLayer[];
  #upper: WritableLayer;
  #upperEntry: UpperRecord;
  /** The new upper's lower: switched from the old stack to the committed one. */
  #lower: SwitchDevice;
  #stack: Stack;
  /** The merged index under the layer sealed last (while it is the top lower), to put its committed form on. */
  #belowTop: MappingTable | undefined;
  /** Releases what opening the record's standard lowers attached (caches, clients). */
  readonly #closeBase: () => Promise<void>;
  #busy: Promise<unknown> = Promise.resolve();
  #busyWith: string | undefined;
  #snapshots = 0;
  #lastSnapshot: SnapshotResult | undefined;
  #closed = false;
  /** Commits and pushes run there; this thread only switches and records. */
  readonly #background = new BackgroundThread();
  readonly #rate: number;

  private constructor(recordPath: string, record: StackRecord, layers: LiveLayer[], stack: Stack, lower: SwitchDevice, upper: WritableLayer, upperEntry: UpperRecord, closeBase: () => Promise<void>, rate: number) {
    this.recordPath = recordPath;
    this.#record = record;
    this.#layers = layers;
    this.#stack = stack;
    this.#lower = lower;
    this.#upper = upper;
    this.#upperEntry = upperEntry;
    this.#closeBase = closeBase;
    this.#rate = rate;
    this.device = new SwitchDevice(upper, `live(${upper.dataPath})`);
  }

  /**
   * Opens the disk the record describes; on a first start (no record yet) writes the record
   * from `initial` first, so every later start — with the same arguments — reads it.
   */
  static async open(opts: LiveOpenOptions): Promise<LiveDisk> {
    const recordPath = path.resolve(opts.record);
    if (!(await isFile(recordPath))) {
      if (!opts.initial) throw new InvalidArgumentError(`${recordPath}: no such stack record, and no layers to start one from`);
      const { layers, upper } = opts.initial;
      await writeRecord(recordPath, { lowers: layers.map((f) => ({ file: path.resolve(f) })), upper: { data: path.resolve(upper.data), index: path.resolve(upper.index) } });
    }
    const record = await readRecord(recordPath);
    await tidyUnrecordedUppers(record);
    if (record.accelerationLayer) throw new NotSupportedError(`${recordPath}: live snapshots of an image with an acceleration layer are not supported`);
    if (!record.upper) throw new InvalidArgumentError(`${recordPath}: names no upper (data + index): a live disk needs a writable layer`);
    // What a snapshot's commit opens on this thread is loaded now: compiling it at the first
    // snapshot would hold requests for tens of milliseconds.
    const [{ layers, closeBase }] = await Promise.all([openLowers(recordPath, record, opts.imageOptions ?? {}), import('../image/open.ts'), import('../zfile/reader.ts')]);
    let stack: Stack | undefined;
    let upper: WritableLayer | undefined;
    try {
      stack = new Stack(layers.map((l) => l.layer), { ownsSources: false, verifyChain: false });
      const lower = new SwitchDevice(stack);
      const u = record.upper;
      const [hasData, hasIndex] = await Promise.all([isFile(u.data), isFile(u.index)]);
      if (hasData !== hasIndex) throw new InvalidArgumentError(`${recordPath}: upper ${hasData ? u.data : u.index} exists but ${hasData ? u.index : u.data} does not`);
      upper = hasData
        ? await WritableLayer.open(u.data, u.index, { lower, ownsLower: false })
        : await WritableLayer.create(u.data, u.index, { virtualSize: stack.size, parentUuid: stack.uuid, lower, ownsLower: false });
      return new LiveDisk(recordPath, record, layers, stack, lower, upper, u, closeBase, checkRate(opts.snapshotRate ?? DEFAULT_SNAPSHOT_RATE));
    } catch (e) {
      await upper?.close().catch(() => {});
      await closeLayers(layers);
      await closeBase();
      throw e;
    }
  }

  get upper(): WritableLayer {
    return this.#upper;
  }

  /** The stack, bottom → top, then the upper. */
  describe(): { record: string; size: number; layers: LayerDescription[]; upper: LayerDescription & WritableStats; busy: string | undefined; snapshots: number } {
    const layers = this.#layers.map((l): LayerDescription => {
      const id = { uuid: l.layer.uuid, parentUuid: l.layer.parentUuid };
      if (l.kind === 'writable') return { kind: 'writable', data: l.entry.data, index: l.entry.index, ...id };
      return { kind: 'sealed', ...(l.entry.file ? { file: l.entry.file } : {}), ...(l.entry.digest ? { digest: l.entry.digest } : {}), ...id };
    });
    const u = this.#upper;
    return {
      record: this.recordPath,
      size: u.size,
      layers,
      upper: { kind: 'writable', data: u.dataPath, index: u.indexPath, uuid: u.uuid, parentUuid: u.parentUuid, ...u.stats() },
      busy: this.#busyWith,
      snapshots: this.#snapshots,
    };
  }

  stats(): { size: number; layers: number; upper: WritableStats; snapshots: number; lastSnapshot: SnapshotResult | undefined } {
    return { size: this.#upper.size, layers: this.#layers.length + 1, upper: this.#upper.stats(), snapshots: this.#snapshots, lastSnapshot: this.#lastSnapshot };
  }

  /** Runs `job` after the running one (snapshots, compactions and resizes never overlap). */
  #exclusive<T>(what: string, job: () => Promise<T>): Promise<T> {
    const run = this.#busy.then(async () => {
      if (this.#closed) throw new BusyError(`${this.recordPath}: the disk is closing`);
      this.#busyWith = what;
      try {
        return await job();
      } finally {
        this.#busyWith = undefined;
      }
    });
    this.#busy = run.catch(() => {});
    return run;
  }

  /** Resolves once no snapshot, compaction or resize is running or queued. */
  async idle(): Promise<void> {
    for (let b = this.#busy; ; b = this.#busy) {
      await b;
      if (b === this.#busy) return;
    }
  }

  snapshot(opts: SnapshotOptions = {}): Promise<SnapshotResult> {
    if (opts.compress && !opts.commit && !opts.push) throw new InvalidArgumentError('--compress needs --commit FILE or --push REF');
    if (opts.rate !== undefined) checkRate(opts.rate);
    return this.#exclusive('snapshot', () => this.#snapshot(opts));
  }

  async #snapshot(opts: SnapshotOptions): Promise<SnapshotResult> {
    const old = this.#upper;
    const oldEntry = this.#upperEntry;
    const dir = path.dirname(old.dataPath);
    const uuid = randomUUID();
    const short = uuid.slice(0, 8);
    const next: UpperRecord = { data: path.join(dir, `upper-${short}.data`), index: path.join(dir, `upper-${short}.index`), obdSnapshot: true };
    const sealedEntry = { data: old.dataPath, index: old.indexPath, ...(oldEntry.obdSnapshot ? { obdSnapshot: true } : {}) };
    // A pushed layer is committed the way it ships (lz4 zfile in a tar unless -z says otherwise), so the push only digests it.
    const compress = opts.compress ?? (opts.push ? 'lz4' : undefined);
    const tar = Boolean(opts.push);
    const commitFile = opts.commit || opts.push ? path.resolve(dir, opts.commit ?? `layer-${old.uuid.slice(0, 8)}.${tar ? 'tar' : compress ? 'zfile' : 'lsmt'}`) : undefined;
    // What would fail after the switch is checked before it.
    if (commitFile && (await isFile(commitFile))) throw new InvalidArgumentError(`${commitFile}: already exists (refusing to overwrite a layer)`);
    if (opts.push) {
      const { resolveReference } = await import('../remote/reference.ts');
      await resolveReference(opts.push);
      this.#pushableFiles(1, true);
    }
    // The new upper exists before the switch but is recorded only in it: a crash before leaves
    // two empty unrecorded files. Until the merged stack is built, its lower is the old upper.
    const lower = new SwitchDevice(old);
    const upper = await WritableLayer.create(next.data, next.index, { virtualSize: old.size, uuid, parentUuid: old.uuid, lower, ownsLower: false });

    // 1–4: the switch. Reads go on throughout; writes wait only here.
    const t0 = performance.now();
    await this.device.quiesce();
    try {
      await old.flush();
      await writeRecord(this.recordPath, this.#recordOf([...this.#layers.map((l) => l.entry), sealedEntry], next));
    } catch (e) {
      this.device.release();
      await upper.close().catch(() => {});
      await Promise.all([rm(next.data, { force: true }), rm(next.index, { force: true })]);
      throw e;
    }
    this.device.swap(upper);
    this.device.release();
    const pauseMs = performance.now() - t0;
    this.#upper = upper;
    this.#upperEntry = next;
    this.#snapshots++;
    const result: SnapshotResult = {
      layer: { uuid: old.uuid, parentUuid: old.parentUuid, data: old.dataPath, index: old.indexPath },
      upper: { uuid: upper.uuid, parentUuid: upper.parentUuid, data: upper.dataPath, index: upper.indexPath },
      pauseMs,
      record: this.recordPath,
    };
    this.#lastSnapshot = result;
    opts.onPhase?.('switched', { pauseMs });
    // The old upper takes no more writes, so its table now is its final content. One merged
    // lookup replaces the upper-over-stack chain, built in slices between requests (the chain
    // serves meanwhile); the old upper stays open (the pair lower reads its file).
    const sealed: Extract<LiveLayer, { kind: 'writable' }> = { kind: 'writable', entry: sealedEntry, layer: writableAsLayer(old, await runSliced(old.indexTableSteps())), rw: old };
    const layers = [...this.#layers, sealed];
    const below = this.#stack.index;
    const stack = await slicedStack(layers, below, sealed.layer.index);
    this.#belowTop = below;
    lower.swap(stack);
    this.#layers = layers;
    this.#stack = stack;
    this.#lower = lower;

    // 5: commit and push while I/O flows, on the snapshot thread.
    const rate = opts.rate ?? this.#rate;
    if (commitFile) {
      const file = commitFile;
      const t1 = performance.now();
      // Sealed layers a crash left uncommitted go first, so the stack ends up all committed.
      for (const l of this.#layers) {
        if (l.kind === 'writable' && l !== sealed) await this.#commitSealed(l, path.join(path.dirname(l.rw.dataPath), `layer-${l.rw.uuid.slice(0, 8)}.lsmt`), { tag: opts.tag, rate });
      }
      const stats = await this.#commitSealed(sealed, file, { tag: opts.tag, compress, tar, rate });
      result.layer.file = file;
      result.commit = { file, bytes: stats.fileBytes, dataBytes: stats.dataBytes, ms: performance.now() - t1 };
      opts.onPhase?.('committed', result.commit);
    }
    if (opts.push) {
      const t2 = performance.now();
      const pushed = await this.#push(opts.push, opts.pushOptions ?? {}, rate);
      const up = pushed.layers.filter((l) => l.result === 'uploaded');
      result.push = { reference: pushed.reference, digest: pushed.digest, uploaded: up.reduce((a, l) => a + l.size, 0), layersUploaded: up.length, ms: performance.now() - t2 };
      opts.onPhase?.('pushed', result.push);
    }
    return result;
  }

  /** Commits a sealed writable lower into `file` (on the snapshot thread) and puts the committed layer in its place. */
  async #commitSealed(sealed: Extract<LiveLayer, { kind: 'writable' }>, file: string, opts: { tag?: string; compress?: 'lz4' | 'zstd'; tar?: boolean; rate: number }): Promise<CommitJobResult> {
    const rw = sealed.rw;
    await removeStaleTemps(path.dirname(file), path.basename(file));
    const tmp = tempPath(file);
    let stats: CommitJobResult;
    try {
      stats = await this.#background.run('commit', { data: rw.dataPath, index: rw.indexPath, tmp, file, uuid: rw.uuid, parentUuid: rw.parentUuid, tag: opts.tag, compress: opts.compress, tar: opts.tar ?? false, rate: opts.rate });
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    const { openLayerFile } = await import('../image/open.ts');
    const opened = await openLayerFile(file);
    const committed: LiveLayer = { kind: 'sealed', entry: { file }, layer: opened, close: () => opened.source.close() };
    const layers = this.#layers.map((l) => (l === sealed ? committed : l));
    // The committed layer maps what the sealed one did, from other offsets: on top, lay it over what was below.
    const onTop = sealed === this.#layers.at(-1) && this.#belowTop;
    let stack: Stack;
    try {
      stack = onTop ? await slicedStack(layers, onTop, opened.index) : new Stack(layers.map((l) => l.layer), { ownsSources: false });
      await writeRecord(this.recordPath, this.#recordOf(layers.map((l) => l.entry), this.#upperEntry));
    } catch (e) {
      await opened.source.close();
      throw e;
    }
    this.#layers = layers;
    this.#stack = stack;
    // A layer below the top changed its offsets: what was saved under the top is stale.
    if (!onTop) this.#belowTop = undefined;
    const { drained } = this.#lower.swap(stack);
    // Nothing reads the old upper once requests that started on the old stack are done.
    await drained;
    await rw.close();
    if (sealed.entry.obdSnapshot) await Promise.all([rm(rw.dataPath, { force: true }), rm(rw.indexPath, { force: true }), rm(`${rw.dataPath}.lock`, { force: true })]);
    return stats;
  }

  /**
   * Pushes lowers (all committed files) to `ref` from the snapshot thread, on top of the last
   * recorded push when that holds every lower but the newest (jobs.ts pushJob); records it.
   */
  async #push(ref: string, opts: PlainPushOptions, rate: number): Promise<PushResult> {
    const r = await this.#background.run('push', { files: this.#pushableFiles(0), ref, options: opts, last: this.#record.obdPushed, rate });
    this.#record = { ...this.#record, obdPushed: { reference: r.reference, digests: r.layers.map((l) => l.digest) } };
    await writeRecord(this.recordPath, this.#recordOf(this.#layers.map((l) => l.entry), this.#upperEntry));
    return r;
  }

  /** The lowers' files for a push; `pending` more layers are about to be committed on top. */
  #pushableFiles(pending: number, committing = false): string[] {
    return this.#layers.map((l, i) => {
      if (committing && l.kind === 'writable') return l.entry.data;
      if (l.kind !== 'sealed' || !l.entry.file) {
        const what = l.kind === 'writable' ? `${l.entry.data}, sealed but not committed` : `${l.entry.digest ?? '?'}, not a local file`;
        throw new NotSupportedError(`layer ${i + 1} of ${this.#layers.length + pending} (${what}) cannot be pushed: push needs every lower as a committed local layer file`);
      }
      return l.entry.file;
    });
  }

  #recordOf(lowers: readonly StackRecord['lowers'][number][], upper: UpperRecord): StackRecord {
    return { ...this.#record, lowers: [...lowers], upper };
  }

  /** Online compaction of the upper (the writable layer's own compact). */
  compact(opts: { onProgress?: (done: number, total: number) => void } = {}): Promise<{ dataBytesBefore: number; dataBytesAfter: number; reclaimed: number }> {
    return this.#exclusive('compact', async () => {
      const u = this.#upper as WritableLayer & OnlineUpper;
      if (typeof u.compact !== 'function') throw new NotSupportedError('online compaction is not available in this build (WritableLayer.compact)');
      return u.compact(opts);
    });
  }

  /** Grows (or with shrink, shrinks) the virtual size; connections opened later see it. */
  resize(size: number, opts: { shrink?: boolean } = {}): Promise<{ before: number; after: number }> {
    if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) return Promise.reject(new InvalidArgumentError(`size ${size} must be a positive multiple of 512 bytes`));
    return this.#exclusive('resize', async () => {
      const u = this.#upper as WritableLayer & OnlineUpper;
      if (typeof u.resize !== 'function') throw new NotSupportedError('online resize is not available in this build (WritableLayer.resize)');
      const before = u.size;
      if (size < before && !opts.shrink) throw new InvalidArgumentError(`size ${size} is smaller than the disk (${before} bytes): shrinking needs shrink`);
      await u.resize(size, opts);
      return { before, after: u.size };
    });
  }

  /**
   * Refuses further snapshots, compactions and resizes and cancels a running snapshot's
   * commit or push at its next chunk (a server stopping calls it first, so the request fails
   * at once instead of holding the stop).
   */
  async stopBackground(): Promise<void> {
    this.#closed = true;
    await this.#background.close();
  }

  /**
   * Cancels a snapshot's background commit or push (the sealed layer stays in the stack, as
   * recorded), waits for what else runs, then closes the upper, the lowers and what opened them.
   */
  async close(): Promise<void> {
    await this.stopBackground();
    await this.#busy;
    let failure: unknown;
    try {
      await this.#upper.close();
    } catch (e) {
      failure = e;
    }
    await closeLayers(this.#layers);
    await this.#stack.close();
    await this.#closeBase();
    if (failure) throw failure;
  }
}

/** What a snapshot names a new upper's files: `upper-<first 8 hex of its uuid>.data|index`. */
const SNAPSHOT_UPPER = /^upper-[0-9a-f]{8}\.(?:data|index)$/;

/**
 * Removes new-upper files that a crash during a snapshot's switch left behind: named by the
 * snapshot protocol, in the upper's directory, named by no layer of the record, no bigger
 * than the headers a fresh pair holds (never written), and held by no live writer.
 */
async function tidyUnrecordedUppers(record: StackRecord): Promise<void> {
  const dir = path.resolve(path.dirname(record.upper!.data));
  const named = new Set<string>([record.upper!.data, record.upper!.index].map((f) => path.resolve(f)));
  for (const l of record.lowers) if (isWritableLower(l)) for (const f of [l.data, l.index]) named.add(path.resolve(f));
  const bases = new Set((await readdir(dir).catch(() => [] as string[])).filter((n) => SNAPSHOT_UPPER.test(n)).map((n) => path.join(dir, n.replace(/\.(?:data|index)$/, ''))));
  for (const base of bases) {
    const pair = [`${base}.data`, `${base}.index`];
    if (pair.some((f) => named.has(f))) continue;
    // Both files (those that exist) hold at most their header: never written.
    const sizes = await Promise.all(pair.map((f) => stat(f).then((st) => (st.isFile() ? st.size : Infinity), () => 0)));
    if (sizes.some((n) => n > HT_SPACE)) continue;
    if ((await lockHolder(pair[0]!)) !== undefined) continue;
    await Promise.all([...pair, `${pair[0]}.lock`].map((f) => rm(f, { force: true })));
  }
}

/** A writable layer that takes no more writes, seen as a stack layer (its table as of now). */
function writableAsLayer(rw: WritableLayer, index: MappingTable = rw.indexTable()): Layer {
  return { source: rw.dataSource, index, virtualSize: rw.size, uuid: rw.uuid, parentUuid: rw.parentUuid, description: '' };
}

/** The stack of `layers` whose merged index is `below` with `top` (the last layer's table) laid over it, built in slices. */
async function slicedStack(layers: readonly LiveLayer[], below: MappingTable, top: MappingTable): Promise<Stack> {
  const index = await runSliced(overlaySteps(below, top, layers.length - 1));
  return new Stack(layers.map((l) => l.layer), { ownsSources: false, index, lookup: await IndexLookup.sliced(index) });
}

function checkRate(rate: number): number {
  if (!(Number.isFinite(rate) && rate >= 0)) throw new InvalidArgumentError(`snapshot rate ${rate} must be a byte rate >= 0 (0: unlimited)`);
  return rate;
}

async function closeLayers(layers: readonly LiveLayer[]): Promise<void> {
  for (const l of layers) await (l.kind === 'writable' ? l.rw.close() : l.close()).catch(() => {});
}

/**
 * Opens the record's lowers bottom → top: standard ones through the config opener (local
 * files, pulled or remote blobs), sealed writable ones read-only.
 */
async function openLowers(recordPath: string, record: StackRecord, opts: ImageOptions): Promise<{ layers: LiveLayer[]; closeBase: () => Promise<void> }> {
  const [{ openParsedImageConfig }, { openLayerSource }] = await Promise.all([import('../image/config.ts'), import('../image/open.ts')]);
  const standard = record.lowers.filter((l) => !isWritableLower(l));
  const base = standard.length > 0 ? await openParsedImageConfig(recordPath, { ...record, lowers: standard, upper: undefined, resultFile: undefined }, opts) : undefined;
  const layers: LiveLayer[] = [];
  try {
    let next = 0;
    for (const entry of record.lowers) {
      if (isWritableLower(entry)) {
        const rw = await WritableLayer.open(entry.data, entry.index, { readOnly: true, allowWriter: true });
        layers.push({ kind: 'writable', entry, layer: writableAsLayer(rw), rw });
      } else {
        const src = base!.layers[next++]!;
        const opened = await openLayerSource(src);
        layers.push({ kind: 'sealed', entry, layer: opened, close: () => src.close() });
      }
    }
  } catch (e) {
    await closeLayers(layers);
    await base?.close();
    throw e;
  }
  return { layers, closeBase: async () => void (await base?.close()) };
}

export type { BlockDevice };
