/**
 * A corrupt block must cost only the reads that touch it. `obd serve` of a two-layer stack
 * whose top layer is a zfile with one damaged block: reads across the damage (an async piece
 * from the base, then the bad piece, failing at once) are interleaved with healthy reads on
 * several connections, simple and structured replies; every healthy byte must be right and
 * the server must stay up.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { FileSource } from '../../src/io/file.ts';
import { HT_SPACE } from '../../src/lsmt/format.ts';
import { ZFileReader } from '../../src/zfile/reader.ts';
import { MAIN, obd } from '../helpers/cli.ts';
import { ERR, RawClient, assemble } from './helpers/client.ts';
import { suiteTempDir } from '../helpers/temp.ts';

const MiB = 1 << 20;
const SIZE = 16 * MiB;
/** The top layer holds [B_FROM, B_TO); a read of [BAD_READ, +600K) takes 400K from the base first. */
const BAD_READ = 4 * MiB;
const B_FROM = BAD_READ + 400 * 1024;
const B_TO = BAD_READ + 600 * 1024;
const LEN = 600 * 1024;
const MIXED = [10 * MiB, 12 * MiB, 14 * MiB];
const SALT = 0x5a5a5a5a5a5a5a5an;

/** Each 8-byte word holds its own disk offset (xor a salt), so bytes from elsewhere show. */
function pattern(from: number, to: number, salt: bigint): Buffer {
  const b = Buffer.alloc(to - from);
  for (let p = 0; p < b.length; p += 8) b.writeBigUInt64LE(BigInt(from + p) ^ salt, p);
  return b;
}

describe('a bad block in a served layer', { timeout: 120_000 }, () => {
  let d: string;
  let child: ReturnType<typeof spawn>;
  let exited = false;
  let stderr = '';
  let socket: string;
  let disk: Buffer;

  const tmp = suiteTempDir('obd-badblock-');
  before(async () => {
    d = tmp.path;
    disk = pattern(0, SIZE, 0n);
    await writeFile(path.join(d, 'a.raw'), disk);
    disk.set(pattern(B_FROM, B_TO, SALT), B_FROM);
    // Healthy regions mixing both layers in pieces small enough to be read synchronously, so
    // such a read completes before a stale piece of an abandoned read could land.
    for (const m of MIXED) for (const at of [m + 128 * 1024, m + 384 * 1024]) disk.set(pattern(at, at + 128 * 1024, SALT), at);
    await writeFile(path.join(d, 'b.raw'), disk);
    const a = path.join(d, 'a.lsmt');
    const b = path.join(d, 'b.lsmt');
    for (const args of [['import', path.join(d, 'a.raw'), a], ['import', path.join(d, 'b.raw'), b, '--base', a, '-z', 'lz4']]) {
      const r = await obd(args);
      assert.equal(r.code, 0, r.stderr);
    }
    // Damage the zfile block holding the top layer's data 150K in (LSMT data follows its header).
    const z = await ZFileReader.open(await FileSource.open(b));
    const { offset, length } = z.blockRange(Math.floor((HT_SPACE + 150 * 1024) / z.blockSize));
    await z.close();
    const bytes = await readFile(b);
    bytes[offset + (length >> 1)]! ^= 0xff;
    await writeFile(b, bytes);

    socket = path.join(d, 'obd.sock');
    child = spawn(process.execPath, [MAIN, 'serve', a, b, '--socket', socket, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr!.on('data', (c) => (stderr += c));
    child.once('exit', () => (exited = true));
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', () => resolve());
      child.once('exit', (code) => reject(new Error(`obd serve exited ${code}: ${stderr}`)));
    });
  });

  after(async () => {
    if (!exited) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });

  it('fails only the reads that touch it, over simple and structured replies, on several connections', async () => {
    const healthy = [...MIXED, 8 * MiB, 1 * MiB + 512];
    const client = async (structured: boolean): Promise<void> => {
      const c = await RawClient.connect({ socket });
      await c.handshake({ structured });
      try {
        for (let round = 0; round < 20; round++) {
          const cookies: { cookie: bigint; offset: number }[] = [];
          for (const h of healthy) {
            cookies.push({ cookie: c.request(0, BAD_READ, LEN), offset: -1 });
            cookies.push({ cookie: c.request(0, h + round * 4096, LEN), offset: h + round * 4096 });
          }
          const results = await c.collect(cookies.map((x) => x.cookie));
          for (const { cookie, offset } of cookies) {
            const r = results.get(cookie)!;
            if (offset < 0) {
              assert.equal(r.error, ERR.EIO, 'the read over the bad block fails with EIO');
              continue;
            }
            assert.equal(r.error, 0, `healthy read at ${offset}: ${r.message}`);
            const got = structured ? assemble(r.chunks, offset, LEN) : r.data!;
            assert.ok(got.equals(disk.subarray(offset, offset + LEN)), `healthy read at ${offset} (round ${round}, ${structured ? 'structured' : 'simple'}) returned other bytes`);
          }
        }
      } finally {
        c.disconnect();
      }
    };
    await Promise.all([client(false), client(false), client(true), client(true)]);
    assert.equal(exited, false, `obd serve died: ${stderr}`);
    // Still serving: the good part of the damaged layer and the base read back exactly.
    const c = await RawClient.connect({ socket });
    await c.handshake({ structured: false });
    const r = await c.read(B_FROM, 100 * 1024);
    assert.equal(r.error, 0);
    assert.ok(r.data!.equals(disk.subarray(B_FROM, B_FROM + 100 * 1024)));
    c.disconnect();
  });
});
