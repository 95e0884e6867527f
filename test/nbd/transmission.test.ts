/** Commands, replies and errors of the transmission phase, from a raw socket. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { InvalidArgumentError, ObdError } from '../../src/io/errors.ts';
import { MemoryDevice } from '../../src/io/memory.ts';
import { CF, CMD, ERR, RawClient, statusOf, type Chunk } from './helpers/client.ts';
import { FaultyDevice, ProbeDevice, startServer, type Running } from './helpers/server.ts';
import { R } from '../helpers/recipes.ts';

const MiB = 1 << 20;

describe('nbd transmission', { timeout: 30_000 }, () => {
  let srv: Running;
  let disk: MemoryDevice;
  let probe: ProbeDevice;
  const ro = new MemoryDevice(MiB, 'ro');
  before(async () => {
    disk = new MemoryDevice(8 * MiB, 'disk');
    probe = new ProbeDevice(disk);
    await ro.write(R('ro', MiB), 0);
    const faultyInner = new MemoryDevice(MiB, 'faulty');
    await faultyInner.write(R('faulty', MiB), 0);
    const faulty = new FaultyDevice(faultyInner, 65536, 69632, () => new ObdError('faulty @65536: medium error'));
    const picky = new FaultyDevice(new MemoryDevice(MiB, 'picky'), 0, MiB, () => new InvalidArgumentError('picky: needs 4096-byte alignment'));
    srv = await startServer({ exports: { disk: probe, ro: { device: ro, readOnly: true }, faulty, picky }, maxPayload: 4 * MiB });
  });
  after(() => srv.stop());

  const open = async (opts: { name?: string; structured?: boolean; contexts?: string[] } = {}) => {
    const c = await RawClient.connect({ socket: srv.socket });
    await c.handshake({ name: 'disk', ...opts });
    return c;
  };

  it('writes and reads back with simple replies', async () => {
    const c = await open();
    const data = R('simple', 128 * 1024);
    assert.equal((await c.write(4096, data)).error, 0);
    const r = await c.read(4096, data.length);
    assert.equal(r.error, 0);
    assert.ok(r.data!.equals(data));
    assert.ok(Buffer.from(disk.bytes.subarray(4096, 4096 + data.length)).equals(data));
    c.close();
  });

  it('structured reads send hole chunks for unwritten ranges and data chunks for the rest', async () => {
    const c = await open({ structured: true });
    const d = R('sparse', 8192);
    await c.write(2 * MiB + 65536, d);
    const r = await c.read(2 * MiB, 256 * 1024);
    assert.equal(r.error, 0);
    const types = r.chunks.map((ch) => ch.type);
    assert.ok(types.includes(2), 'has a hole chunk');
    assert.ok(types.includes(1), 'has a data chunk');
    assert.equal(r.chunks.filter((ch) => ch.flags & 1).length, 1, 'exactly one DONE chunk');
    assert.ok(r.chunks.at(-1)!.flags & 1, 'DONE comes last');
    const expect = Buffer.alloc(256 * 1024);
    d.copy(expect, 65536);
    assert.ok(r.data!.equals(expect));
    // DF: one content chunk, zeros inline.
    const df = await c.read(2 * MiB, 256 * 1024, CF.DF);
    assert.deepEqual(df.chunks.map((ch) => ch.type), [1]);
    assert.ok(df.data!.equals(expect));
    // A zero-length read is answered, not dropped.
    const z = await c.read(0, 0);
    assert.equal(z.error, 0);
    c.close();
  });

  it('reports errors: past the end, oversized, bad flags, unknown commands, read-only', async () => {
    for (const structured of [false, true]) {
      const c = await open({ structured });
      assert.equal((await c.read(8 * MiB - 512, 1024)).error, ERR.EINVAL);
      assert.equal((await c.read(2 ** 40, 512)).error, ERR.EINVAL);
      assert.equal((await c.read(2 ** 62, 512)).error, ERR.EINVAL);
      assert.equal((await c.read(0, 4 * MiB + 512)).error, ERR.EINVAL);
      assert.equal((await c.write(8 * MiB - 512, Buffer.alloc(1024))).error, ERR.ENOSPC);
      assert.equal((await c.run(CMD.WRITE_ZEROES, 8 * MiB, 512)).error, ERR.ENOSPC);
      assert.equal((await c.run(CMD.TRIM, 8 * MiB - 512, 4096)).error, ERR.EINVAL);
      assert.equal((await c.run(CMD.CACHE, 0, 8 * MiB)).error, ERR.EINVAL);
      assert.equal((await c.run(42, 0, 0)).error, ERR.EINVAL);
      assert.equal((await c.run(CMD.READ, 0, 512, { flags: 1 << 7 })).error, ERR.EINVAL);
      assert.equal((await c.run(CMD.WRITE, 0, 512, { flags: CF.NO_HOLE, payload: Buffer.alloc(512) })).error, ERR.EINVAL);
      assert.equal((await c.run(CMD.BLOCK_STATUS, 0, 4096)).error, ERR.EINVAL, 'no context selected');
      if (!structured) assert.equal((await c.read(0, 512, CF.DF)).error, ERR.EINVAL, 'DF needs structured replies');
      // Still in sync after all that.
      assert.equal((await c.read(0, 512)).error, 0);
      c.close();
      const r = await open({ name: 'ro', structured });
      assert.equal((await r.write(0, Buffer.alloc(512))).error, ERR.EPERM);
      assert.equal((await r.run(CMD.TRIM, 0, 512)).error, ERR.EPERM);
      assert.equal((await r.run(CMD.WRITE_ZEROES, 0, 512)).error, ERR.EPERM);
      assert.ok((await r.read(0, 4096)).data!.equals(R('ro', 4096)));
      assert.equal((await r.run(CMD.FLUSH, 0, 0)).error, 0);
      r.close();
    }
  });

  it('device errors become NBD errors with messages, and the connection carries on', async () => {
    const c = await open({ name: 'faulty', structured: true });
    const bad = await c.read(65536, 4096);
    assert.equal(bad.error, ERR.EIO);
    assert.match(bad.message!, /medium error/);
    assert.ok(!bad.chunks.some((ch) => ch.type === 1), 'no data chunk for a failed read');
    assert.equal((await c.read(0, 65536)).error, 0);
    assert.equal((await c.read(0, 256 * 1024)).error, ERR.EIO, 'a large read spanning the bad range fails whole');
    assert.equal((await c.write(65536, Buffer.alloc(512))).error, ERR.EIO);
    c.close();
    const s = await open({ name: 'faulty' });
    assert.equal((await s.read(65536, 512)).error, ERR.EIO);
    assert.equal((await s.read(0, 512)).error, 0);
    s.close();
    const p = await open({ name: 'picky' });
    assert.equal((await p.write(512, Buffer.alloc(512))).error, ERR.EINVAL, 'typed errno is kept');
    p.close();
    assert.ok(srv.events.some((e) => e.type === 'io-error' && e.command === 'READ' && e.offset === 65536));
  });

  it('write zeroes: via trim by default, allocated with NO_HOLE, FAST_ZERO only when fast', async () => {
    const c = await open({ contexts: ['base:allocation'] });
    const base = 5 * MiB;
    await c.write(base, R('wz', 64 * 1024));
    const status = async () => statusOf((await c.run(CMD.BLOCK_STATUS, base, 64 * 1024)).chunks[0]!).extents;
    // Unaligned edges are written, the aligned middle trimmed.
    assert.equal((await c.run(CMD.WRITE_ZEROES, base + 100, 8192)).error, 0);
    const expect = R('wz', 64 * 1024);
    expect.fill(0, 100, 8292);
    assert.ok((await c.read(base, 64 * 1024)).data!.equals(expect));
    assert.equal((await c.run(CMD.WRITE_ZEROES, base + 16384, 16384, { flags: CF.FAST_ZERO })).error, 0);
    assert.deepEqual((await status()).slice(0, 4).map(([, f]) => f), [0, 3, 0, 3]);
    assert.equal((await c.run(CMD.WRITE_ZEROES, base + 32768, 8192, { flags: CF.NO_HOLE | CF.FAST_ZERO })).error, ERR.ENOTSUP);
    assert.ok((await c.read(base + 32768, 8192)).data!.equals(expect.subarray(32768, 40960)), 'a refused fast zero changes nothing');
    assert.equal((await c.run(CMD.WRITE_ZEROES, base + 32768, 8192, { flags: CF.NO_HOLE | CF.FUA })).error, 0);
    assert.ok((await c.read(base + 32768, 8192)).data!.equals(Buffer.alloc(8192)));
    const ext = await status();
    let pos = 0;
    for (const [len, f] of ext) {
      if (pos >= 32768 && pos + len <= 40960) assert.equal(f, 0, 'NO_HOLE keeps the range allocated');
      pos += len;
    }
    c.close();
  });

  it('trim, flush, FUA and cache reach the device', async () => {
    const c = await open();
    // Connections of earlier tests flush on their way out; let them finish first.
    while (srv.server.connectionCount > 1) await new Promise((res) => setTimeout(res, 5));
    await c.write(6 * MiB, R('t', 8192));
    const flushes = probe.flushes;
    assert.equal((await c.run(CMD.TRIM, 6 * MiB + 100, 4096)).error, 0);
    const after = (await c.read(6 * MiB, 8192)).data!;
    assert.ok(after.subarray(512, 4096).equals(Buffer.alloc(3584)), 'whole sectors inside the range are discarded');
    assert.ok(after.subarray(0, 512).equals(R('t', 512)), 'the partial first sector is kept');
    assert.equal((await c.run(CMD.FLUSH, 0, 0)).error, 0);
    assert.equal((await c.write(6 * MiB, Buffer.alloc(512, 1), CF.FUA)).error, 0);
    assert.equal(probe.flushes, flushes + 2);
    const reads = probe.reads;
    assert.equal((await c.run(CMD.CACHE, 0, 3 * MiB)).error, 0);
    assert.ok(probe.reads > reads, 'CACHE reads through the device');
    c.close();
  });

  it('block status: base:allocation and qemu:allocation-depth, REQ_ONE, request-bounded', async () => {
    const c = await open({ contexts: ['base:allocation', 'qemu:allocation-depth'] });
    await c.write(7 * MiB + 8192, R('bs', 4096));
    await c.run(CMD.TRIM, 7 * MiB + 16384, 4096);
    const r = await c.run(CMD.BLOCK_STATUS, 7 * MiB, 65536);
    assert.equal(r.error, 0);
    assert.equal(r.chunks.length, 2);
    assert.ok(r.chunks[1]!.flags & 1 && !(r.chunks[0]!.flags & 1));
    const byId = new Map(r.chunks.map((ch: Chunk) => [statusOf(ch).id, statusOf(ch).extents]));
    const [base, depth] = [...byId.values()];
    assert.deepEqual(base, [[8192, 3], [4096, 0], [53248, 3]]);
    assert.deepEqual(depth, [[8192, 0], [4096, 1], [4096, 0], [4096, 1], [45056, 0]]);
    for (const ext of [base!, depth!]) assert.equal(ext.reduce((s, [l]) => s + l, 0), 65536);
    const one = await c.run(CMD.BLOCK_STATUS, 7 * MiB, 65536, { flags: CF.REQ_ONE });
    for (const ch of one.chunks) assert.equal(statusOf(ch).extents.length, 1);
    assert.equal((await c.run(CMD.BLOCK_STATUS, 7 * MiB, 0)).error, ERR.EINVAL);
    assert.equal((await c.run(CMD.BLOCK_STATUS, 8 * MiB - 512, 1024)).error, ERR.EINVAL);
    c.close();
  });

  it('contexts chosen for another export do not carry over to the one entered', async () => {
    const c = await RawClient.connect({ socket: srv.socket });
    await c.greeting();
    c.sendClientFlags(1);
    await c.option(8);
    c.structured = true;
    const { metaRequest, infoRequest } = await import('./helpers/client.ts');
    await c.option(10, metaRequest('ro', ['base:allocation']));
    await c.option(7, infoRequest('disk', []));
    assert.equal((await c.run(CMD.BLOCK_STATUS, 0, 4096)).error, ERR.EINVAL);
    c.close();
  });

  it('completes out of order: a slow read does not hold back a fast one', { timeout: 10_000 }, async () => {
    const c = await open({ structured: true });
    probe.hold((off) => off === 3 * MiB);
    try {
      const slow = c.request(CMD.READ, 3 * MiB, 4096);
      const fast = c.request(CMD.READ, 0, 4096);
      const first = await c.reply();
      assert.equal(first.cookie, fast);
      assert.equal(probe.heldCount, 1);
      probe.release();
      const second = await c.reply();
      assert.equal(second.cookie, slow);
    } finally {
      probe.hold(undefined);
      probe.release();
    }
    c.close();
  });

  it('DISC lets running requests finish, then the server closes the connection', async () => {
    const c = await open();
    probe.hold((off) => off === 3 * MiB + 4096);
    const r = c.request(CMD.READ, 3 * MiB + 4096, 4096);
    c.request(CMD.DISC, 0, 0);
    await new Promise((res) => setTimeout(res, 30));
    assert.equal(probe.heldCount, 1);
    probe.hold(undefined);
    probe.release();
    const got = await c.collect([r]);
    assert.equal(got.get(r)!.error, 0);
    assert.ok(await c.closedByServer());
  });
});

describe('nbd large replies', { timeout: 60_000 }, () => {
  it('many concurrent large reads come back intact (reply buffers are reused only after being sent)', async () => {
    const disk = new MemoryDevice(16 * MiB, 'big');
    await disk.write(R('big', 16 * MiB), 0);
    const s = await startServer({ exports: { '': disk } });
    try {
      for (const structured of [false, true]) {
        const c = await RawClient.connect({ socket: s.socket });
        await c.handshake({ structured });
        for (let round = 0; round < 3; round++) {
          const want = new Map<bigint, [number, number]>();
          for (let i = 0; i < 24; i++) {
            const len = [65536, 262144, 1048576][i % 3]! + (round === 2 ? 512 : 0);
            const off = ((i * 5 + round) % 14) * MiB + 4096 * i;
            want.set(c.request(CMD.READ, off, len), [off, len]);
          }
          const got = await c.collect(want.keys());
          for (const [k, [off, len]] of want) {
            const r = got.get(k)!;
            const data = structured ? (await import('./helpers/client.ts')).assemble(r.chunks, off, len) : r.data!;
            assert.ok(data.equals(disk.bytes.subarray(off, off + len)), `read [${off}, +${len}) ${structured ? 'structured' : 'simple'}`);
          }
        }
        c.close();
      }
    } finally {
      await s.stop();
    }
  });

  it('the buffer pool reuses by size class and keeps at most its cap', async () => {
    const { BufferPool, POOL_MIN } = await import('../../src/nbd/pool.ts');
    const pool = new BufferPool(3 * MiB);
    const a = pool.get(MiB + 28);
    assert.equal(a.length, MiB + 28);
    pool.put(a);
    const b = pool.get(MiB + 16);
    assert.equal(b.buffer, a.buffer, 'same class, same memory');
    assert.notEqual(pool.get(MiB + 16).buffer, a.buffer, 'a buffer is handed out once');
    pool.put(b);
    for (let i = 0; i < 5; i++) pool.put(Buffer.from(new ArrayBuffer(MiB + 64)));
    assert.equal(pool.pooledBytes, 2 * (MiB + 64), 'kept up to the cap');
    pool.put(Buffer.from(new ArrayBuffer(MiB + 100)));
    pool.put(pool.get(POOL_MIN - 1));
    assert.equal(pool.pooledBytes, 2 * (MiB + 64), 'odd sizes and small buffers are not pooled');
  });
});

describe('nbd big exports', { timeout: 30_000 }, () => {
  it('64-bit offsets, reads near the end of a 6 GiB export, block status capped per request', async () => {
    // A sparse device: one 4 KiB data block at 5 GiB + 12 KiB, holes elsewhere.
    const size = 6 * 1024 * MiB;
    const at = 5 * 1024 * MiB + 12288;
    const block = R('far', 4096);
    const seen: [number, number][] = [];
    const dev = {
      name: 'sparse6g',
      size,
      layerCount: 1,
      writable: false,
      async read(buf: Uint8Array, offset: number) {
        buf.fill(0);
        const a = Math.max(offset, at);
        const b = Math.min(offset + buf.length, at + 4096);
        if (a < b) buf.set(block.subarray(a - at, b - at), a - offset);
      },
      async extents(offset: number, length: number) {
        seen.push([offset, length]);
        const out: { offset: number; length: number; kind: 'data' | 'hole'; layer: number }[] = [];
        const end = offset + length;
        if (offset < at) out.push({ offset, length: Math.min(at, end) - offset, kind: 'hole', layer: -1 });
        if (offset < at + 4096 && end > at) out.push({ offset: Math.max(offset, at), length: Math.min(end, at + 4096) - Math.max(offset, at), kind: 'data', layer: 0 });
        if (end > at + 4096) out.push({ offset: Math.max(offset, at + 4096), length: end - Math.max(offset, at + 4096), kind: 'hole', layer: -1 });
        return out;
      },
      async close() {},
    };
    const s = await startServer({ exports: { '': dev } });
    try {
      const c = await RawClient.connect({ socket: s.socket });
      await c.handshake({ contexts: ['base:allocation'] });
      assert.equal(c.size, size);
      const r = await c.read(at - 4096, 12288);
      assert.ok(r.data!.subarray(4096, 8192).equals(block));
      assert.ok(r.data!.subarray(0, 4096).equals(Buffer.alloc(4096)));
      assert.equal((await c.read(size - 4096, 4096)).error, 0);
      assert.equal((await c.read(size, 512)).error, ERR.EINVAL);
      const st = await c.run(CMD.BLOCK_STATUS, 4 * 1024 * MiB, 0x7ffff000);
      assert.equal(st.error, 0);
      const ext = statusOf(st.chunks[0]!).extents;
      const total = ext.reduce((n, [l]) => n + l, 0);
      assert.ok(total <= 1024 * MiB && total > 0, `one request looks at most 1 GiB (got ${total})`);
      assert.deepEqual(seen.at(-1), [4 * 1024 * MiB, 1024 * MiB]);
      const near = await c.run(CMD.BLOCK_STATUS, at - 8192, 16384);
      assert.deepEqual(statusOf(near.chunks[0]!).extents, [[8192, 3], [4096, 0], [4096, 3]]);
      c.close();
    } finally {
      await s.stop();
    }
  });
});
