/**
 * What a layer blob is, decided by magic the way qemu probes image formats: a list of
 * wrappers (tar, zfile) that can be peeled off, a list of layer formats (LSMT) that can be
 * opened into a Layer, and a list of look-alikes — blobs that are none of these but are
 * recognisable, so the error can say what the blob is and what to do. Opening images and
 * pushing them both go through these lists.
 */
import { FormatError } from '../io/errors.ts';
import type { ByteSource } from '../io/types.ts';
import { readAt } from '../io/util.ts';
import { hasLsmtMagic } from '../lsmt/format.ts';
import { openSealedLayer, type SealedLayer } from '../lsmt/sealed.ts';
import { RecompressedLayerError, sniffStreamCompression } from '../remote/recompressed.ts';
import { FLAG_HEADER, hasZFileMagic } from '../zfile/format.ts';
import type { MemoryBudget } from '../zfile/block-cache.ts';
import { isTarHeader, openTarEntry } from '../zfile/tar.ts';

/** Bytes every probe may look at (a tar header, a zfile or LSMT header all fit). */
export const PROBE_BYTES = 512;

export interface Wrapper {
  readonly name: 'tar' | 'zfile';
  probe(head: Uint8Array): boolean;
  /** The wrapped bytes, as a source. */
  open(src: ByteSource, opts?: ProbeOptions): Promise<ByteSource>;
}

export interface ProbeOptions {
  /** Decoded zfile blocks are kept under this shared budget (default: a small cache per layer). */
  memory?: MemoryBudget;
}

export interface LayerFormat {
  readonly name: 'lsmt';
  probe(head: Uint8Array): boolean;
  open(src: ByteSource): Promise<SealedLayer>;
}

export const WRAPPERS: readonly Wrapper[] = [
  {
    name: 'tar',
    probe: (head) => head.length >= 512 && isTarHeader(head),
    async open(src) {
      const entry = await openTarEntry(src);
      if (!entry) throw new FormatError(src.name, 'not a tar archive', 0);
      return entry;
    },
  },
  {
    name: 'zfile',
    probe: (head) => head.length >= 40 && hasZFileMagic(head) && (head[32]! & FLAG_HEADER) !== 0,
    // Imported when a zfile is found: opening a plain LSMT layer (obd info, commit) loads no codec code.
    open: async (src, opts) => (await readers()).ZFileReader.open(src, { budget: opts?.memory }),
  },
];

export const FORMATS: readonly LayerFormat[] = [{ name: 'lsmt', probe: hasLsmtMagic, open: openSealedLayer }];

interface LookAlike {
  probe(head: Uint8Array): boolean;
  /** The error for a blob that is this, found `inside` the given wrappers ('' when outermost). */
  error(name: string, inside: string, head: Uint8Array): FormatError;
}

const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb];

/** Recognisable blobs that are not overlaybd layers, with what to do about each. */
const LOOK_ALIKES: readonly LookAlike[] = [
  {
    probe: (h) => sniffStreamCompression(h) !== undefined,
    // Outermost, it is a layer another tool recompressed (skopeo's default); inside a wrapper, just a stream.
    error: (name, inside, h) =>
      inside ? new FormatError(name, `a ${sniffStreamCompression(h)} stream${inside}, not an overlaybd layer`, 0) : new RecompressedLayerError(name, sniffStreamCompression(h)!),
  },
  {
    probe: (h) => QCOW2_MAGIC.every((b, i) => h[i] === b),
    error: (name, inside) => new FormatError(name, `this is a qcow2 image${inside}, not an overlaybd layer: import it first (obd import DISK.qcow2 OUT.lsmt)`, 0),
  },
  {
    // ext2/3/4 superblock magic 0xEF53 at byte 1080.
    probe: (h) => h.length >= 1082 && h[1080] === 0x53 && h[1081] === 0xef,
    error: (name, inside) => new FormatError(name, `this is a raw ext2/3/4 filesystem image${inside}, not an overlaybd layer: make a layer of it with obd import DISK.raw OUT.lsmt`, 0),
  },
  {
    probe: (h) => h.length >= 512 && isTarHeader(h),
    error: (name, inside) => new FormatError(name, `this is a tar archive${inside} without an overlaybd layer in it (a container image layer? convert the image instead)`, 0),
  },
];

/** Bytes read when nothing matched, to recognise a look-alike (ext4's magic sits at 1080). */
const LOOK_ALIKE_BYTES = 4096;

const readers = () => import('../zfile/reader.ts');

/**
 * Starts loading the zfile reader ahead of the first layer that needs it (an open waiting
 * on a registry's answers has the time). Resolves when loaded; never rejects (a load
 * failure surfaces when a layer needs the reader).
 */
export function preloadReaders(): Promise<void> {
  return readers().then(
    () => {},
    () => {},
  );
}

/**
 * Peels wrappers off `src` (each at most once, in list order) and opens the layer inside.
 * `wrapDecoded` may wrap the innermost bytes before the format reads them.
 */
export async function probeLayer(
  src: ByteSource,
  wrapDecoded?: (decoded: ByteSource) => ByteSource,
  opts: ProbeOptions = {},
): Promise<{ layer: SealedLayer; wrapping: ('tar' | 'zfile' | 'lsmt')[] }> {
  const wrapping: ('tar' | 'zfile' | 'lsmt')[] = [];
  let cur = src;
  let head = await readHead(cur, PROBE_BYTES);
  for (const w of WRAPPERS) {
    if (!w.probe(head)) continue;
    cur = await w.open(cur, opts);
    wrapping.push(w.name);
    head = await readHead(cur, PROBE_BYTES);
  }
  const format = FORMATS.find((f) => f.probe(head));
  if (!format) throw await notALayer(src.name, cur, wrapping);
  wrapping.push(format.name);
  return { layer: await format.open(wrapDecoded ? wrapDecoded(cur) : cur), wrapping };
}

/** What the outermost wrapper or format of `src` is, without opening it (push decides by it). */
export async function probeOuter(src: ByteSource): Promise<'tar' | 'zfile' | 'lsmt'> {
  const head = await readHead(src, PROBE_BYTES);
  const kind = WRAPPERS.find((w) => w.probe(head))?.name ?? FORMATS.find((f) => f.probe(head))?.name;
  if (!kind) throw await notALayer(src.name, src, []);
  return kind;
}

/** The error for a blob no list recognises: what it looks like, and what to do. */
async function notALayer(name: string, inner: ByteSource, wrapping: readonly string[]): Promise<FormatError> {
  const head = await readHead(inner, LOOK_ALIKE_BYTES);
  const inside = wrapping.length ? ` (inside the ${wrapping.join(' > ')} wrapper)` : '';
  const known = LOOK_ALIKES.find((l) => l.probe(head));
  if (known) return known.error(name, inside, head);
  return new FormatError(name, `not an overlaybd layer: not an LSMT layer (no LSMT magic at offset 0${inside}), nor a zfile or a tar-wrapped layer`, 0);
}

function readHead(src: ByteSource, n: number): Promise<Uint8Array> {
  return readAt(src, 0, Math.min(n, src.size));
}

