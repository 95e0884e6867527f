/** The qcow2 reader against images qemu wrote: bytes, extents, backing files, refusals. */
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { ChecksumError, FormatError, NotFoundError } from '../../src/io/errors.ts';
import type { Qcow2Device } from '../../src/qcow2/device.ts';
import { RUN_COMPRESSED } from '../../src/qcow2/file.ts';
import { openQcow2Chain } from '../../src/qcow2/chain.ts';
import { Qcow2UnsupportedError, UncleanImageError } from '../../src/qcow2/errors.ts';
import { inDir, readAll } from '../snapshots/helpers.ts';
import { MiB, SKIP, makeChain, obdOk, qemuImg, qemuIo, qemuRaw, setHeaderBit, stackBytes } from './helpers.ts';
import { withTempDir } from '../helpers/temp.ts';

async function readsAsQemu(file: string, dir: string): Promise<void> {
  const chain = await openQcow2Chain(file);
  try {
    const got = Buffer.from(await readAll(chain.device));
    const ref = await qemuRaw(file, dir);
    assert.ok(got.equals(ref), `${file} reads as qemu reads it`);
    // Odd pieces across cluster, subcluster and compressed boundaries read the same.
    for (const [at, n] of [[2 * MiB - 1000, 70_000], [512 * 1024 + 3, 5000], [7 * MiB + 17, 1]]) {
      if (at! + n! > chain.device.size) continue;
      const piece = new Uint8Array(n!);
      await chain.device.read(piece, at!);
      assert.ok(Buffer.from(piece).equals(ref.subarray(at!, at! + n!)), `piece at ${at}`);
    }
  } finally {
    await chain.device.close();
  }
}

/** qemu-img map's allocation (data or zero present at some depth) against our extents. */
async function extentsAsQemu(file: string): Promise<void> {
  const map = JSON.parse(await qemuImg('map', '--output=json', file)) as { start: number; length: number; present: boolean; zero: boolean; data: boolean; depth: number }[];
  const chain = await openQcow2Chain(file);
  try {
    const depth = chain.images.length - 1;
    for (const m of map) {
      for (const e of await chain.device.extents(m.start, m.length)) {
        const kind = !m.present ? 'hole' : m.data ? 'data' : 'zero';
        assert.equal(e.kind, kind, `${file} [${e.offset}, +${e.length}) is ${kind}`);
        if (m.present) assert.equal(e.layer, depth - m.depth, `${file} [${e.offset}, +${e.length}) comes from depth ${m.depth}`);
      }
    }
  } finally {
    await chain.device.close();
  }
}

test('a chain with compressed (zlib, zstd), zero and subcluster-allocated clusters reads as qemu reads it', { skip: SKIP }, async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const c = await makeChain(t.dir);
    for (const f of [c.base, c.mid, c.top]) {
      await readsAsQemu(f, t.dir);
      await extentsAsQemu(f);
    }
    const chain = await openQcow2Chain(c.top);
    assert.deepEqual(chain.images.map((i) => path.basename(i.path)), ['base.qcow2', 'mid.qcow2', 'top.qcow2']);
    assert.deepEqual(chain.images.map((i) => i.format), ['qcow2', 'qcow2', 'qcow2']);
    await chain.device.close();
  }, 'obd-snap-');
});

test('version 2 images and cluster sizes from 512 B to 2 MiB', { skip: SKIP }, async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    for (const [opts, name, cluster] of [['compat=0.10,cluster_size=64k', 'v2.qcow2', '64k'], ['cluster_size=512', 'c512.qcow2', '64k'], ['cluster_size=2M', 'c2m.qcow2', '2M'], ['cluster_size=16k,extended_l2=on', 'c16k.qcow2', '16k']] as const) {
      const f = t.file(name);
      await qemuImg('create', '-q', '-f', 'qcow2', '-o', opts, f, '9M');
      // Compressed writes must cover whole clusters.
      await qemuIo(f, ['write -P 0x5a 1000k 3k', `write -c -P 0x6b 4M ${cluster}`, 'write -z 6M 1M', 'write -P 0x7c 8M 1M']);
      await readsAsQemu(f, t.dir);
      await extentsAsQemu(f);
    }
  }, 'obd-snap-');
});

test('backing files: relative to the image, absolute, raw, larger and smaller than the image; --chain over them', { skip: SKIP }, async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    await mkdir(t.file('disks/base'), { recursive: true });
    const raw = t.file('disks/base/base.raw');
    // The raw base is larger than the middle image: past the middle's end the top reads zeros.
    await writeFile(raw, Buffer.alloc(6 * MiB, 0x21));
    // Relative to the overlay's directory, not to the working directory.
    const mid = t.file('disks/mid.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', 'base/base.raw', mid, '4M');
    await qemuIo(mid, ['write -P 0x31 1M 64k']);
    const top = t.file('top.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', mid, top, '6M');
    await qemuIo(top, ['write -P 0x41 5M 4k']);
    await readsAsQemu(top, t.dir);
    const chain = await openQcow2Chain(top);
    assert.deepEqual(chain.images.map((i) => [path.relative(t.dir, i.path), i.format]), [['disks/base/base.raw', 'raw'], ['disks/mid.qcow2', 'qcow2'], ['top.qcow2', 'qcow2']]);
    await chain.device.close();
    // One layer per image: the middle layer hides the base past its own end.
    const r = await obdOk(['import', top, t.file('layers'), '--chain']);
    assert.deepEqual(r.layers.map((l: { format: string }) => l.format), ['raw', 'qcow2', 'qcow2']);
    const stacked = await stackBytes(r.layers.map((l: { file: string }) => path.join(t.file('layers'), l.file)));
    assert.ok(stacked.equals(await qemuRaw(top, t.dir)));
    assert.ok(stacked.subarray(4 * MiB + 4096, 5 * MiB).every((x) => x === 0));
    // Without the backing format extension the format is probed: hide the extension by
    // giving it a type no reader knows (qemu then probes too).
    const probed = t.file('probed.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'disks/base/base.raw', '-F', 'raw', probed, '4M');
    const img = await readFile(probed);
    const ext = img.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]));
    assert.ok(ext > 0);
    img.writeUInt32BE(0x0eadbeef, ext);
    await writeFile(probed, img);
    await readsAsQemu(probed, t.dir);
    const p = await openQcow2Chain(probed);
    assert.equal(p.images[0]!.format, 'raw');
    await p.device.close();
  }, 'obd-snap-');
});

test('dirty and corrupt images are refused unless forced; encryption, external data files and unknown features are refused', { skip: SKIP }, async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const f = t.file('d.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', f, '1M');
    await qemuIo(f, ['write -P 0x12 0 4k']);
    // incompatible_features is the big-endian u64 at 72: bit 0 dirty, bit 1 corrupt.
    await setHeaderBit(f, 79, 1);
    await assert.rejects(openQcow2Chain(f), (e) => e instanceof UncleanImageError && e.bit === 'dirty' && /qemu-img check -r all/.test(e.message) && e.message.includes(f));
    const forced = await openQcow2Chain(f, { force: true });
    const b = new Uint8Array(4096);
    await forced.device.read(b, 0);
    assert.ok(b.every((x) => x === 0x12));
    await forced.device.close();
    await setHeaderBit(f, 79, 2);
    await assert.rejects(openQcow2Chain(f), (e) => e instanceof UncleanImageError && e.bit === 'corrupt');

    const unknown = t.file('u.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', unknown, '1M');
    await setHeaderBit(unknown, 79, 0x80);
    await assert.rejects(openQcow2Chain(unknown), (e) => e instanceof Qcow2UnsupportedError && /bit 7/.test(e.message));

    // AES rather than LUKS: qemu-img spends seconds deriving a LUKS key.
    const enc = t.file('enc.qcow2');
    await qemuImg('create', '-q', '--object', 'secret,id=s0,data=pw', '-f', 'qcow2', '-o', 'encrypt.format=aes,encrypt.key-secret=s0', enc, '1M');
    await assert.rejects(openQcow2Chain(enc), (e) => e instanceof Qcow2UnsupportedError && /encryption \(AES\)/.test(e.message));

    const ext = t.file('ext.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${t.file('ext.data')}`, ext, '1M');
    await assert.rejects(openQcow2Chain(ext), (e) => e instanceof Qcow2UnsupportedError && /external data file/.test(e.message));

    const orphan = t.file('orphan.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'gone.qcow2', '-u', orphan, '1M');
    await assert.rejects(openQcow2Chain(orphan), (e) => e instanceof NotFoundError && e.message.includes('gone.qcow2') && e.message.includes(`backing file of ${orphan}`));

    const notQcow2 = t.file('plain.raw');
    await writeFile(notQcow2, Buffer.alloc(4096));
    await assert.rejects(openQcow2Chain(notQcow2), (e) => e instanceof FormatError && /no QFI/.test(e.message));
    // A truncated image: its L1 table lies past the end of the file.
    const cut = t.file('cut.qcow2');
    const head = Buffer.from((await readFile(f)).subarray(0, 65536));
    await writeFile(cut, head);
    await assert.rejects(openQcow2Chain(cut, { force: true }), (e) => e instanceof FormatError && /L1 table/.test(e.message));
    // A hostile L1 size is refused before anything that large is read.
    const huge = Buffer.from(head);
    huge.writeUInt32BE(0x01000000, 36);
    await writeFile(t.file('huge.qcow2'), huge);
    await assert.rejects(openQcow2Chain(t.file('huge.qcow2'), { force: true }), (e) => e instanceof FormatError && /qemu's limit/.test(e.message));
  }, 'obd-snap-');
});

test('a damaged compressed cluster (zlib or zstd) fails its read with the file and offset', { skip: SKIP }, async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    for (const type of ['zlib', 'zstd']) {
      const f = t.file(`${type}.qcow2`);
      await qemuImg('create', '-q', '-f', 'qcow2', '-o', `compression_type=${type}`, f, '1M');
      await qemuIo(f, ['write -c -P 0x5a 0 64k']);
      const chain = await openQcow2Chain(f);
      const dev = chain.device as Qcow2Device;
      const runs = await dev.file.runs(0, 65536);
      assert.equal(runs.kind[0], RUN_COMPRESSED);
      const host = runs.host[0]!;
      await chain.device.close();
      const img = await readFile(f);
      img.fill(0xff, host, host + 16);
      await writeFile(f, img);
      const damaged = await openQcow2Chain(f);
      await assert.rejects(damaged.device.read(new Uint8Array(4096), 0), (e) => e instanceof ChecksumError && e.message.startsWith(`${f} @${host}: compressed cluster (${type}`));
      await damaged.device.close();
    }
  }, 'obd-snap-');
});
