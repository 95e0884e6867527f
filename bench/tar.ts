/**
 * The tar reader's throughput from memory: a 1 GiB archive of 1 MiB files (goal ≥ 2 GB/s) and
 * 100,000 small files (goal ≥ 200,000 entries/s), fed as 1 MiB chunks of one buffer, every
 * data piece visited; GNU tar listing the same bytes from /dev/shm alongside (`tar -t`, which
 * seeks over data). Then zstd decompression through zstd-napi vs node:zlib's zstd, and gzip
 * through node:zlib vs gzip(1), on the same archive.
 *
 *   node bench/tar.ts [--quick]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createZstdDecompress } from 'node:zlib';
import { Readable } from 'node:stream';
import { decompressed } from '../src/tar/decompress.ts';
import { readTar } from '../src/tar/reader.ts';
import { TarWriter } from '../src/tar/writer.ts';
import { median, table, writeResults } from './util.ts';

const quick = process.argv.includes('--quick');
const RUNS = quick ? 1 : 3;
const CHUNK = 1 << 20;

function archive(count: number, sizeOf: (i: number) => number): Buffer {
  const w = new TarWriter();
  const data = Buffer.alloc(1 << 20, 0x61);
  const parts: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    parts.push(w.entry({ path: `dir${i % 100}/file-${i}`, type: 'file', mode: 0o644, mtime: 1_700_000_000, data: data.subarray(0, sizeOf(i)) }));
  }
  parts.push(w.end());
  return Buffer.concat(parts);
}

async function* chunks(b: Uint8Array): AsyncGenerator<Uint8Array> {
  for (let p = 0; p < b.length; p += CHUNK) yield b.subarray(p, p + CHUNK);
}

async function parse(input: AsyncIterable<Uint8Array>): Promise<{ entries: number; bytes: number }> {
  let entries = 0;
  let bytes = 0;
  for await (const e of readTar(input)) {
    entries++;
    for await (const p of e.data()) bytes += p.bytes.length;
  }
  return { entries, bytes };
}

async function timed(fn: () => Promise<unknown> | unknown): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  return median(times);
}

const shm = mkdtempSync(path.join(existsShm() ? '/dev/shm' : os.tmpdir(), 'obd-bench-tar-'));
function existsShm(): boolean {
  try {
    execFileSync('test', ['-d', '/dev/shm']);
    return true;
  } catch {
    return false;
  }
}
const load = os.loadavg()[0]!.toFixed(2);
const rows: string[][] = [];
try {
  const big = archive(quick ? 256 : 1024, () => 1 << 20);
  const small = archive(quick ? 20_000 : 100_000, (i) => (i * 97) % 2048);
  for (const [label, buf] of [['1 MiB files', big], ['small files (0–2 KiB)', small]] as const) {
    const file = path.join(shm, 'a.tar');
    writeFileSync(file, buf);
    const n = await parse(chunks(buf));
    const ours = await timed(() => parse(chunks(buf)));
    const gnu = await timed(() => execFileSync('tar', ['-tf', file], { maxBuffer: 1 << 30 }));
    rows.push([label, `${(buf.length / 2 ** 20).toFixed(0)} MiB, ${n.entries} entries`,
      `${(buf.length / ours / 1e9).toFixed(2)} GB/s, ${(n.entries / ours).toFixed(0)} entries/s`,
      `${(buf.length / gnu / 1e9).toFixed(2)} GB/s, ${(n.entries / gnu).toFixed(0)} entries/s`, (gnu / ours).toFixed(2)]);
  }
  // Decompression of a realistic-ish layer (text-like data compresses, like a root filesystem).
  const layerSize = quick ? 64 << 20 : 256 << 20;
  const layer = execFileSync('sh', ['-c', `tar -cf - -C /usr lib share/doc 2>/dev/null | head -c ${layerSize}`], { maxBuffer: 2 ** 31 });
  const zst = execFileSync('zstd', ['-c', '-q', '-3'], { input: layer, maxBuffer: 2 ** 31 });
  const gz = execFileSync('gzip', ['-c', '-6'], { input: layer, maxBuffer: 2 ** 31 });
  writeFileSync(path.join(shm, 'l.gz'), gz);
  const drain = async (it: AsyncIterable<Uint8Array>): Promise<number> => {
    let n = 0;
    for await (const c of it) n += c.length;
    return n;
  };
  const mb = layer.length / 1e6;
  const napi = await timed(() => drain(decompressed(chunks(zst))));
  const zlibZstd = await timed(() => drain(Readable.from(chunks(zst)).pipe(createZstdDecompress())));
  const nodeGz = await timed(() => drain(decompressed(chunks(gz))));
  const gzip1 = await timed(() => execFileSync('sh', ['-c', `gzip -dc '${path.join(shm, 'l.gz')}' > /dev/null`]));
  const dec = [
    ['zstd', `zstd-napi (used): ${(mb / napi).toFixed(0)} MB/s`, `node:zlib zstd: ${(mb / zlibZstd).toFixed(0)} MB/s`, (zlibZstd / napi).toFixed(2)],
    ['gzip', `node:zlib (used): ${(mb / nodeGz).toFixed(0)} MB/s`, `gzip -dc > /dev/null: ${(mb / gzip1).toFixed(0)} MB/s`, (gzip1 / nodeGz).toFixed(2)],
  ];
  await writeResults('tar', `## Tar reader (bench/tar.ts)

Parsing from memory (1 MiB chunks of one buffer, every data piece visited) beside GNU tar
listing the same archive from ${shm.startsWith('/dev/shm') ? 'tmpfs' : 'the temp dir'} (\`tar -tf\`, which seeks over data instead
of reading it); median of ${RUNS}. Load average at the start: ${load} on ${os.cpus().length} CPUs.

${table(['archive', 'size', 'ours', 'GNU tar -t', 'speed-up vs GNU tar'], rows)}

Decompressing ${(layer.length / 2 ** 20).toFixed(0)} MiB of a tar of /usr/lib and /usr/share/doc
(uncompressed MB/s, as the reader consumes it):

${table(['codec', 'ours', 'alternative', 'speed-up'], dec)}
`);
} finally {
  rmSync(shm, { recursive: true, force: true });
}
