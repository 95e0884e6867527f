/**
 * `obd import` from NBD exports served by qemu-nbd: a qcow2 chain read through block status
 * (holes and zeros skipped), and an incremental backup through a persistent dirty bitmap.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import path from 'node:path';
import { openImage } from '../../src/image/open.ts';
import type { Extent } from '../../src/io/types.ts';
import { NbdClient } from '../../src/nbd/client.ts';
import { startServer } from '../nbd/helpers/server.ts';
import { FIXTURES } from '../helpers/recipes.ts';
import { obd } from '../helpers/cli.ts';
import { inDir, readAll } from '../snapshots/helpers.ts';
import { readdir } from 'node:fs/promises';
import { missing } from '../nbd/helpers/run.ts';
import { MiB, SKIP, obdOk, makeChain, nbdPeer, qemuImg, qemuIo, qemuNbd, qemuRaw, stackBytes } from './helpers.ts';
import { tempDir, withTempDir } from '../helpers/temp.ts';

test('an NBD export imports as qemu reads it, reading only what block status calls data', { skip: SKIP }, async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const c = await makeChain(t.dir);
    const srv = await qemuNbd(c.top, t.file('nbd.sock'), ['-f', 'qcow2']);
    try {
      const flat = await obdOk(['import', srv.uri, t.file('flat.lsmt')]);
      assert.equal(flat.kind, 'nbd');
      assert.ok((await stackBytes([t.file('flat.lsmt')])).equals(await qemuRaw(c.top, t.dir)));
      // The client sees holes and zeros, so an import reads far less than the disk.
      const client = await NbdClient.connect(srv.uri);
      const ext = await client.extents(0, client.size);
      const data = ext.filter((e) => e.kind === 'data').reduce((s, e) => s + e.length, 0);
      assert.ok(data > 0 && data < client.size / 2, `${data} of ${client.size} bytes are data`);
      assert.equal(ext.reduce((s, e) => s + e.length, 0), client.size);
      await client.close();
      const missing = await obd(['import', srv.uri.replace(':///', ':///nosuch'), t.file('x.lsmt')]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /no export named "nosuch"/);
    } finally {
      await srv.stop();
    }
  }, 'obd-snap-');
});

test('--dirty-bitmap imports only the dirty extents as a delta over --base (incremental backup)', { skip: SKIP }, async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const disk = t.file('disk.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', disk, '16M');
    await qemuIo(disk, ['write -P 0x11 0 4M', 'write -P 0x12 6M 1M']);
    const full = await obdOk(['import', disk, t.file('full.lsmt')]);
    // Written after the full backup but before the bitmap: the bitmap does not know it, so
    // an import that reads only dirty extents cannot see it.
    await qemuIo(disk, ['write -P 0x44 12M 4k']);
    // A persistent bitmap records every write from now on.
    await qemuImg('bitmap', '--add', disk, 'b1');
    await qemuIo(disk, ['write -P 0x22 1M 4k', 'write -z 2M 64k', 'write -P 0x33 8M 128k', 'write -P 0x12 6M 64k']);
    const srv = await qemuNbd(disk, t.file('nbd.sock'), ['-f', 'qcow2', '-B', 'b1']);
    try {
      const inc = await obdOk(['import', srv.uri, t.file('inc.lsmt'), '--dirty-bitmap', 'b1', '--base', t.file('full.lsmt')]);
      assert.equal(inc.parentUuid, full.uuid);
      const now = await qemuRaw(disk, t.dir);
      const unseen = Buffer.from(now);
      unseen.fill(0, 12 * MiB, 12 * MiB + 4096);
      assert.ok((await stackBytes([t.file('full.lsmt'), t.file('inc.lsmt')])).equals(unseen));
      // A delta without the bitmap compares everything, so it does see that write.
      const all = await obdOk(['import', srv.uri, t.file('all.lsmt'), '--base', t.file('full.lsmt')]);
      assert.equal(all.dataBytes, inc.dataBytes + 4096);
      assert.ok((await stackBytes([t.file('full.lsmt'), t.file('all.lsmt')])).equals(now));
      // The 4 KiB write and the 128 KiB one changed data; the zeroed 64 KiB hides the base;
      // the rewrite of 6M with the same bytes is dirty but equal to the base, so not stored.
      assert.equal(inc.dataBytes, 4096 + 128 * 1024);
      assert.equal(inc.zeroedBlocks, 16);
      const noBase = await obd(['import', srv.uri, t.file('x.lsmt'), '--dirty-bitmap', 'b1']);
      assert.equal(noBase.code, 1);
      assert.match(noBase.stderr, /--base/);
      const noBitmap = await obd(['import', srv.uri, t.file('x.lsmt'), '--dirty-bitmap', 'nosuch', '--base', t.file('full.lsmt')]);
      assert.equal(noBitmap.code, 1);
      assert.match(noBitmap.stderr, /qemu:dirty-bitmap:nosuch/);
    } finally {
      await srv.stop();
    }
    assert.equal((await stackBytes([t.file('full.lsmt')])).length, 16 * MiB);
  }, 'obd-snap-');
});

test("our own NBD server's export imports through the client, which sees the same data extents", async (ctx) => {
  const stack = await openImage(['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((n) => path.join(FIXTURES, 'lsmt', n)));
  const srv = await startServer({ exports: { stack } });
  const t = inDir(await tempDir(ctx, 'obd-snap-'));
  try {
    const client = await NbdClient.connect(srv.uri('stack'));
    const dataRanges = (es: Extent[]) => {
      const out: [number, number][] = [];
      for (const e of es) {
        if (e.kind !== 'data') continue;
        const last = out.at(-1);
        if (last && last[1] === e.offset) last[1] += e.length;
        else out.push([e.offset, e.offset + e.length]);
      }
      return out;
    };
    const theirs = dataRanges(await stack.extents(0, stack.size));
    assert.ok(theirs.length > 3);
    assert.deepEqual(dataRanges(await client.extents(0, client.size)), theirs);
    await client.close();
    await obdOk(['import', srv.uri('stack'), t.file('copy.lsmt')]);
    assert.ok((await stackBytes([t.file('copy.lsmt')])).equals(Buffer.from(await readAll(stack))));
  } finally {
    await srv.stop();
    await stack.close();
  }
});

test('a server error while reading fails the import with the offset, and leaves no output', { skip: missing('nbdkit').length ? 'nbdkit missing' : false }, async (ctx) => {
  const t = inDir(await tempDir(ctx, 'obd-snap-'));
  const srv = await nbdPeer('nbdkit', ['-f', '-U', t.file('k.sock'), '--filter=error', 'pattern', '16M', 'error-pread-rate=1', 'error-pread=EIO'], t.file('k.sock'));
  try {
    const r = await obd(['import', srv.uri, t.file('k.lsmt')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^obd: nbd\+unix:.*server error 5 for read of \d+ bytes at \d+/m);
    assert.deepEqual((await readdir(t.dir)).filter((n) => n.startsWith('k.lsmt')), [], 'no output, not even a temporary one');
  } finally {
    await srv.stop();
  }
});
