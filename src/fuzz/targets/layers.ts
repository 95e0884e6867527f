/**
 * Layer blobs as the product opens them (openLayerSource: tar → zfile → LSMT, then a
 * stack), and zfiles as ZFileReader opens them: plain LSMT layers, zfiles, layers inside
 * zfiles, tar wrappers around both, and one mutated layer inside a stack of sound ones.
 */
import path from 'node:path';
import { MemorySource } from '../../io/memory.ts';
import type { ByteSource } from '../../io/types.ts';
import { openLayerSource } from '../../image/open.ts';
import { Stack } from '../../lsmt/stack.ts';
import { rawCrc32c } from '../../zfile/crc.ts';
import { computeDigest, FLAG_DIGEST, FLAG_OVERWRITTEN, HT_SPACE as Z_HT } from '../../zfile/format.ts';
import { ZFileReader } from '../../zfile/reader.ts';
import { openTarEntry, tarHeaderBlocks, tarTrailerSize, TAR_PAYLOAD_OFFSET } from '../../zfile/tar.ts';
import { readDevice, readSource } from '../readback.ts';
import type { Field } from '../mutate.ts';
import { content, layerBytes, lsmtFields, lsmtIndexOffset, MiB, readFixture, sampleExtents, zfileBytes, zfileFields } from '../seeds.ts';
import type { Outcome, Seed, Target, TargetContext } from '../target.ts';

/**
 * A memory source that answers asynchronously (as remote and large file reads do), or
 * every other read asynchronously (as a file source does when the page cache is cold for
 * some pieces), so pieces of one read are in flight together and may fail at different times.
 */
class AsyncSource extends MemorySource {
  readonly #every: number;
  #calls = 0;
  constructor(bytes: Uint8Array, name: string, every: number) {
    super(bytes, name);
    this.#every = every;
  }
  override tryReadSync(buf: Uint8Array, offset: number): number | undefined {
    return ++this.#calls % this.#every === 0 ? super.tryReadSync(buf, offset) : undefined;
  }
  override async read(buf: Uint8Array, offset: number): Promise<number> {
    await new Promise((r) => setImmediate(r));
    return super.read(buf, offset);
  }
}

/** A third of the inputs (chosen by their bytes) each: synchronous, asynchronous, mixed. */
function source(input: Uint8Array, name: string): ByteSource {
  const mode = (input.length + (input[input.length >> 1] ?? 0)) % 3;
  return mode === 0 ? new MemorySource(input, name) : new AsyncSource(input, name, mode === 1 ? Infinity : 2);
}

async function readLayer(input: Uint8Array, name: string, cap: number): Promise<Outcome> {
  const layer = await openLayerSource(source(input, name));
  const stack = new Stack([layer]);
  try {
    return await readDevice(stack, cap);
  } finally {
    await stack.close();
  }
}

async function readZFile(input: Uint8Array, name: string, cap: number): Promise<Outcome> {
  const src = source(input, name);
  const reader = await ZFileReader.open((await openTarEntry(src)) ?? src);
  try {
    return await readSource(reader, cap);
  } finally {
    await reader.close();
  }
}

/** Recomputes a zfile's jump-table CRC and header/trailer digests after a mutation. */
function resealZFile(b: Uint8Array, base = 0, end = b.length): Uint8Array {
  if (end - base < 2 * Z_HT || end > b.length) return b;
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const trailerAt = end - Z_HT;
  const overwritten = (dv.getUint32(base + 32, true) & FLAG_OVERWRITTEN) !== 0;
  const fieldsAt = overwritten ? base : trailerAt;
  const tableAt = base + Number(dv.getBigUint64(fieldsAt + 40, true));
  const tableLen = Number(dv.getBigUint64(fieldsAt + 48, true)) * 4;
  if (tableAt >= base && tableAt + tableLen <= end) {
    const crc = rawCrc32c(b.subarray(tableAt, tableAt + tableLen), 0);
    for (const at of overwritten ? [base, trailerAt] : [trailerAt]) dv.setUint32(at + 64, crc, true);
  }
  for (const at of [base, trailerAt]) if (dv.getUint32(at + 32, true) & FLAG_DIGEST) dv.setUint32(at + 28, computeDigest(b.subarray(at, at + Z_HT)), true);
  return b;
}

/** Rewrites the checksum of each of the three tar header blocks the writer emits. */
function resealTar(b: Uint8Array): Uint8Array {
  for (const at of [0, 1024]) {
    if (at + 512 > b.length) break;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : b[at + i]!;
    const text = sum.toString(8).padStart(6, '0') + '\0 ';
    for (let i = 0; i < 8; i++) b[at + 148 + i] = text.charCodeAt(i);
  }
  return b;
}

/** Fields of the tar wrapper: the numeric text fields byte by byte, the type flag, the checksum. */
function tarFields(): Field[] {
  const out: Field[] = [];
  for (const at of [0, 1024]) {
    for (let i = 0; i < 12; i += 3) out.push({ at: at + 124 + i, width: 1, name: 'tar.size' });
    out.push({ at: at + 156, width: 1, name: 'tar.type' }, { at: at + 148, width: 1, name: 'tar.chksum' });
  }
  out.push({ at: 512, width: 4, name: 'pax.record' });
  return out;
}

function wrapTar(payload: Uint8Array): Uint8Array {
  return Buffer.concat([tarHeaderBlocks(payload.length), payload, new Uint8Array(tarTrailerSize(payload.length))]);
}

const ID = { uuid: 'f0f0f0f0-0000-4000-8000-000000000001', parentUuid: '', virtualSize: 4 * MiB };

/** Plain LSMT has no checksums: any change it reads back is undetectable. */
function lsmtSeed(name: string, bytes: Uint8Array): Seed {
  return { name, bytes, fields: lsmtFields(bytes, lsmtIndexOffset(bytes)), guarded: false };
}

export const lsmtTarget: Target = {
  name: 'lsmt',
  async seeds() {
    const gen = await layerBytes(ID, sampleExtents('lsmt'));
    const odd = await layerBytes({ ...ID, virtualSize: 64 * MiB, userTag: 'fuzz' }, [{ offset: 63 * MiB, data: content('tail', MiB) }]);
    return [
      lsmtSeed('layer1.lsmt', await readFixture('lsmt/layer1.lsmt')),
      lsmtSeed('layer2.lsmt', await readFixture('lsmt/layer2.lsmt')),
      lsmtSeed('layer3.lsmt', await readFixture('lsmt/layer3.lsmt')),
      lsmtSeed('generated.lsmt', gen),
      lsmtSeed('generated-tail.lsmt', odd),
    ];
  },
  run: (seed, input, ctx) => readLayer(input, seed.name, ctx.readCap),
};

function zSeed(name: string, bytes: Uint8Array, guarded: boolean, base = 0): Seed {
  const end = base === 0 ? bytes.length : base + zfileLength(bytes);
  return {
    name,
    bytes,
    fields: [...(base ? tarFields() : []), ...zfileFields(bytes, base, end)],
    guarded,
    reseal: (b) => (base ? resealTar(resealZFile(b, base, end)) : resealZFile(b)),
  };
}

/** Length of the zfile inside a tar wrapper written by tarHeaderBlocks (the PAX size record). */
function zfileLength(tar: Uint8Array): number {
  const record = Buffer.from(tar.subarray(512, 1024)).toString('latin1');
  return Number(/size=(\d+)/.exec(record)![1]);
}

async function generatedZFiles(ctx: TargetContext, data: Uint8Array): Promise<[string, Uint8Array, boolean][]> {
  return [
    ['lz4-4k-crc', await zfileBytes(ctx.tmp, data, { algorithm: 'lz4', blockSize: 4096 }), true],
    ['zstd-16k-nocrc', await zfileBytes(ctx.tmp, data, { algorithm: 'zstd', blockSize: 16384, crc: false }), false],
    ['lz4-64k-overwritten', await zfileBytes(ctx.tmp, data, { algorithm: 'lz4', blockSize: 65536, overwriteHeader: true }), true],
    ['zstd-8k-crc', await zfileBytes(ctx.tmp, data, { algorithm: 'zstd', blockSize: 8192, level: 1 }), true],
  ];
}

export const zfileTarget: Target = {
  name: 'zfile',
  async seeds(ctx) {
    const data = Buffer.concat([content('z-rand', 100 * 1024), new Uint8Array(64 * 1024), content('z-text', 150 * 1024 + 123, true)]);
    const fixtures: [string, boolean][] = [
      ['zinput-8m.lz4-bs4.zfile', true],
      ['zinput-8m.zstd-bs32.zfile', true],
      ['zinput-8m.lz4-bs4-nocrc.zfile', false],
      ['zinput-odd.zstd-bs16.zfile', true],
    ];
    const out: Seed[] = [];
    for (const [f, crc] of fixtures) out.push(zSeed(f, await readFixture(`zfile/${f}`), crc));
    for (const [n, b, crc] of await generatedZFiles(ctx, data)) out.push(zSeed(`generated-${n}.zfile`, b, crc));
    return out;
  },
  run: (seed, input, ctx) => readZFile(input, seed.name, ctx.readCap),
};

export const layerZFileTarget: Target = {
  name: 'layer-zfile',
  async seeds(ctx) {
    const layer = await layerBytes(ID, sampleExtents('lz'));
    const out: Seed[] = [zSeed('layer1.lz4bs4.zfile', await readFixture('lsmt/layer1.lz4bs4.zfile'), true)];
    for (const [n, b, crc] of await generatedZFiles(ctx, layer)) out.push(zSeed(`generated-layer-${n}.zfile`, b, crc));
    return out;
  },
  run: (seed, input, ctx) => readLayer(input, seed.name, ctx.readCap),
};

export const tarTarget: Target = {
  name: 'tar',
  async seeds(ctx) {
    const layer = await layerBytes(ID, sampleExtents('tar'));
    const [, lz] = (await generatedZFiles(ctx, layer))[0]!;
    const tarFixture = await readFixture('zfile/zinput-8m.zstd-bs8.zfile.tar');
    return [
      { name: 'zinput-8m.zstd-bs8.zfile.tar', bytes: tarFixture, fields: tarFields(), guarded: true, reseal: resealTar, meta: { kind: 'zfile' } },
      { ...zSeed('generated-layer.zfile.tar', wrapTar(lz), true, TAR_PAYLOAD_OFFSET), meta: { kind: 'layer' } },
      { name: 'generated-layer.lsmt.tar', bytes: wrapTar(layer), fields: tarFields(), guarded: false, reseal: resealTar, meta: { kind: 'layer' } },
    ];
  },
  run: (seed, input, ctx) => (seed.meta?.kind === 'zfile' ? readZFile(input, seed.name, ctx.readCap) : readLayer(input, seed.name, ctx.readCap)),
};

/**
 * Stacks around the mutated layer (bottom → top, '*' = the mutated one; `zfile` compresses it
 * with CRCs first). The sound layers answer asynchronously, so a window's earlier pieces are
 * still in flight when a later piece of the mutated layer fails at once.
 */
const STACKS: { mutated: string; zfile?: boolean; around: string[] }[] = [
  { mutated: 'lsmt/layer2.lsmt', around: ['lsmt/layer1.lsmt', '*'] },
  { mutated: 'lsmt/layer3.lsmt', zfile: true, around: ['lsmt/layer1.lsmt', 'lsmt/layer2.lsmt', '*'] },
  { mutated: 'lsmt/layer1.lz4bs4.zfile', around: ['*', 'lsmt/layer2.lsmt', 'lsmt/layer3.lsmt'] },
];

export const stackTarget: Target = {
  name: 'stack',
  async seeds(ctx) {
    const out: Seed[] = [];
    for (const { mutated, zfile, around } of STACKS) {
      const raw = await readFixture(mutated);
      const bytes = zfile ? await zfileBytes(ctx.tmp, raw, { algorithm: 'lz4' }) : raw;
      const compressed = zfile || mutated.endsWith('.zfile');
      const others = await Promise.all(around.map((f) => (f === '*' ? undefined : readFixture(f))));
      const fields = compressed ? zfileFields(bytes) : lsmtFields(bytes, lsmtIndexOffset(bytes));
      const name = around.map((f) => (f === '*' ? `[${path.basename(mutated)}${zfile ? '.zfile' : ''}]` : path.basename(f))).join('+');
      out.push({ name, bytes, fields, guarded: compressed, reseal: compressed ? resealZFile : undefined, meta: { others } });
    }
    return out;
  },
  async run(seed, input, ctx) {
    const others = seed.meta!.others as (Uint8Array | undefined)[];
    const layers = [];
    try {
      for (const [i, b] of others.entries()) layers.push(await openLayerSource(b ? new AsyncSource(b, `layer${i}`, Infinity) : source(input, seed.name)));
      const stack = new Stack(layers, { verifyChain: true });
      layers.length = 0; // the stack closes them now
      try {
        return await readDevice(stack, ctx.readCap);
      } finally {
        await stack.close();
      }
    } finally {
      await Promise.all(layers.map((l) => l.source.close()));
    }
  },
};
