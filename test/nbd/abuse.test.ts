/**
 * Clients that misbehave — truncated frames, bad magic, oversized lengths, floods that never
 * read their replies — and many clients at once. The server must stay up, bounded and correct.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { MemoryDevice } from '../../src/io/memory.ts';
import { CMD, ERR, IHAVEOPT, OPT, RawClient, requestBytes } from './helpers/client.ts';
import { ProbeDevice, startServer, type Running } from './helpers/server.ts';
import { R } from '../helpers/recipes.ts';

const MiB = 1 << 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('nbd abuse', { timeout: 120_000 }, () => {
  let srv: Running;
  let disk: MemoryDevice;
  let probe: ProbeDevice;
  before(async () => {
    disk = new MemoryDevice(4 * MiB, 'disk');
    await disk.write(R('abuse', 4 * MiB), 0);
    probe = new ProbeDevice(disk);
    srv = await startServer({ exports: { '': probe }, maxInFlight: 8, maxBufferedBytes: 64 * 1024 });
  });
  after(() => srv.stop());

  const open = async (structured = false) => {
    const c = await RawClient.connect({ socket: srv.socket });
    await c.handshake({ structured });
    return c;
  };
  const check = async (c: RawClient, offset = 12288) => {
    const r = await c.read(offset, 4096);
    assert.equal(r.error, 0);
    assert.ok(r.data!.equals(disk.bytes.subarray(offset, offset + 4096)));
  };

  it('survives truncated handshakes of every length', async () => {
    const witness = await open();
    const full = Buffer.concat([Buffer.from([0, 0, 0, 1]), optionBytes(OPT.GO, Buffer.from([0, 0, 0, 0, 0, 0]))]);
    for (let cut = 0; cut < full.length; cut += 3) {
      const c = await RawClient.connect({ socket: srv.socket });
      await c.greeting();
      c.send(full.subarray(0, cut));
      await sleep(1);
      c.socket.end();
      assert.ok(await c.closedByServer());
    }
    await check(witness);
    witness.close();
  });

  it('a bad request magic ends only that connection', async () => {
    const witness = await open();
    const c = await open();
    await check(c);
    c.send(requestBytes(CMD.READ, 0, 512, { cookie: 7n, magic: 0x25609514 }));
    assert.ok(await c.closedByServer());
    await check(witness);
    witness.close();
    assert.ok(srv.events.some((e) => e.type === 'protocol-error' && /magic/.test(e.message)));
  });

  it('requests up to the advertised maximum are served; longer ones get EINVAL and the connection goes on', async () => {
    const small = await startServer({ exports: { '': disk }, maxPayload: MiB });
    try {
      const c = await RawClient.connect({ socket: small.socket });
      await c.handshake({ infos: [3] });
      const before = Buffer.from(disk.bytes.subarray(0, 2 * MiB));
      // The largest payload advertised reads and writes back in one request.
      const whole = await c.read(MiB, MiB);
      assert.equal(whole.error, 0);
      assert.ok(whole.data!.equals(before.subarray(MiB, 2 * MiB)));
      assert.equal((await c.write(MiB, whole.data!)).error, 0);
      // One byte more: the read is refused, the write's payload is read and dropped (sent in
      // pieces, as a slow client would), and the requests behind it are framed right.
      assert.equal((await c.read(0, MiB + 512)).error, ERR.EINVAL);
      const big = Buffer.alloc(MiB + 512, 0x5a);
      const cookie = c.request(CMD.WRITE, 0, big.length);
      for (let at = 0; at < big.length; at += 100_000) {
        c.send(big.subarray(at, at + 100_000));
        await sleep(1);
      }
      const after = c.request(CMD.READ, 0, 4096);
      const got = await c.collect([cookie, after]);
      assert.equal(got.get(cookie)!.error, ERR.EINVAL);
      assert.equal(got.get(after)!.error, 0);
      assert.ok(got.get(after)!.data!.equals(before.subarray(0, 4096)), 'the refused write changed nothing');
      assert.ok(before.equals(disk.bytes.subarray(0, 2 * MiB)));
      // A write length no client could send in full is refused the same way, its first bytes dropped.
      const huge = c.request(CMD.WRITE, 0, 0xfffffff0);
      c.send(Buffer.alloc(4096, 0x77));
      assert.equal((await c.collect([huge])).get(huge)!.error, ERR.EINVAL);
      c.close();
    } finally {
      await small.stop();
    }
  });

  it('a request cut off mid-header or mid-payload is dropped cleanly', async () => {
    const witness = await open();
    for (const bytes of [requestBytes(CMD.READ, 0, 512, { cookie: 1n }).subarray(0, 17), requestBytes(CMD.WRITE, 0, 4096, { cookie: 1n, payload: Buffer.alloc(4096, 0xaa) }).subarray(0, 2000)]) {
      const c = await open();
      c.send(bytes);
      c.socket.end();
      assert.ok(await c.closedByServer());
      assert.equal(c.buffered, 0, 'no reply for a partial request');
    }
    assert.ok(disk.bytes.subarray(0, 16).some((b) => b !== 0xaa), 'a partial write never reaches the device');
    await check(witness);
    witness.close();
  });

  it('a pipelined flood is answered in full, never running more than maxInFlight at once', async () => {
    const c = await open(true);
    const n = 3000;
    const parts: Buffer[] = [];
    const offsets = new Map<bigint, number>();
    for (let i = 0; i < n; i++) {
      const off = ((i * 7919) % 1024) * 4096;
      offsets.set(BigInt(i + 1), off);
      parts.push(requestBytes(CMD.READ, off, 4096, { cookie: BigInt(i + 1) }));
    }
    probe.maxRunning = 0;
    c.send(Buffer.concat(parts));
    const got = await c.collect(offsets.keys());
    for (const [cookie, off] of offsets) {
      const r = got.get(cookie)!;
      assert.equal(r.error, 0);
      assert.ok(r.chunks[0]!.data.subarray(8).equals(disk.bytes.subarray(off, off + 4096)), `cookie ${cookie}`);
    }
    assert.ok(probe.maxRunning <= 8, `at most 8 running, saw ${probe.maxRunning}`);
    c.close();
  });

  it('a client that does not read its replies is stopped by back-pressure, then served in full', async () => {
    const c = await open(true);
    const n = 40000;
    const parts: Buffer[] = [];
    for (let i = 0; i < n; i++) parts.push(requestBytes(CMD.READ, (i % 1024) * 4096, 4096, { cookie: BigInt(i + 1) }));
    c.socket.pause();
    const before = probe.reads;
    c.send(Buffer.concat(parts));
    await sleep(300);
    const served = probe.reads - before;
    assert.ok(served < 2000, `the server stopped reading requests (served ${served} of ${n})`);
    assert.ok(c.socket.writableLength > 0, 'requests back up in the client, not in the server');
    c.socket.resume();
    let ok = 0;
    for (let i = 0; i < n; i++) {
      const r = await c.reply();
      if (r.kind === 'chunk' && r.type === 1 && r.flags === 1) ok++;
    }
    assert.equal(ok, n);
    assert.equal(probe.reads - before, n);
    c.close();
  });

  it('framing does not depend on how the byte stream is split', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ slot: fc.integer({ min: 0, max: 63 }), len: fc.integer({ min: 1, max: 24 }), seed: fc.integer() }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 40 }),
        async (writes, cuts) => {
          const c = await open(true);
          try {
            // Distinct 32 KiB slots keep pipelined writes from overlapping (NBD may reorder them).
            const seen = new Set<number>();
            const reqs: Buffer[] = [];
            const model = Buffer.from(disk.bytes.subarray(2 * MiB, 4 * MiB));
            let cookie = 1n;
            const cookies: bigint[] = [];
            for (const w of writes) {
              if (seen.has(w.slot)) continue;
              seen.add(w.slot);
              const payload = R(`fc${w.seed}`, w.len * 512);
              payload.copy(model, w.slot * 32768);
              cookies.push(cookie);
              reqs.push(requestBytes(CMD.WRITE, 2 * MiB + w.slot * 32768, payload.length, { cookie: cookie++, payload }));
            }
            await sendSplit(c, Buffer.concat(reqs), cuts);
            for (const r of (await c.collect(cookies)).values()) assert.equal(r.error, 0);
            const reads: Buffer[] = [];
            const readCookies = new Map<bigint, number>();
            for (let s = 0; s < 64; s += 8) {
              readCookies.set(cookie, s);
              reads.push(requestBytes(CMD.READ, 2 * MiB + s * 32768, 8 * 32768, { cookie: cookie++ }));
            }
            await sendSplit(c, Buffer.concat(reads), cuts);
            const { assemble } = await import('./helpers/client.ts');
            for (const [k, r] of await c.collect(readCookies.keys())) {
              const s = readCookies.get(k)!;
              const data = assemble(r.chunks, 2 * MiB + s * 32768, 8 * 32768);
              assert.ok(data.equals(model.subarray(s * 32768, (s + 8) * 32768)));
            }
          } finally {
            c.close();
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  it('serves many connections at once, each writing its own region', async () => {
    const clients = await Promise.all(Array.from({ length: 8 }, () => open(true)));
    await Promise.all(
      clients.map(async (c, i) => {
        const base = 3 * MiB + i * 65536;
        const data = R(`conn${i}`, 65536);
        const cookies = [];
        for (let k = 0; k < 16; k++) cookies.push(c.request(CMD.WRITE, base + k * 4096, 4096, { payload: data.subarray(k * 4096, (k + 1) * 4096) }));
        for (const r of (await c.collect(cookies)).values()) assert.equal(r.error, 0);
      }),
    );
    // Every connection sees every other connection's writes (one shared device: multi-conn safe).
    await Promise.all(
      clients.map(async (c, i) => {
        const j = (i + 3) % 8;
        const r = await c.read(3 * MiB + j * 65536, 65536);
        assert.ok(r.data!.equals(R(`conn${j}`, 65536)));
      }),
    );
    for (const c of clients) c.close();
  });
});

describe('nbd shutdown', { timeout: 30_000 }, () => {
  it('finishes running requests, refuses new ones, flushes, closes and removes the socket', async () => {
    const disk = new MemoryDevice(MiB, 'disk');
    await disk.write(R('sd', MiB), 0);
    const probe = new ProbeDevice(disk);
    const s = await startServer({ exports: { d: probe } });
    const c = await RawClient.connect({ socket: s.socket });
    await c.handshake({ name: 'd' });
    const idle = await RawClient.connect({ socket: s.socket });
    await idle.greeting();
    probe.hold((off) => off === 8192);
    const held = c.request(CMD.READ, 8192, 4096);
    await sleep(20);
    const flushes = probe.flushes;
    const closing = s.server.close();
    await sleep(20);
    assert.ok(await idle.closedByServer(), 'a client still negotiating is dropped');
    const late = c.request(CMD.READ, 0, 512);
    const lateReply = await c.collect([late]);
    assert.equal(lateReply.get(late)!.error, ERR.ESHUTDOWN);
    probe.hold(undefined);
    probe.release();
    const got = await c.collect([held]);
    assert.equal(got.get(held)!.error, 0);
    assert.ok(got.get(held)!.data!.equals(R('sd', MiB).subarray(8192, 12288)));
    await closing;
    assert.ok(await c.closedByServer());
    assert.ok(probe.flushes > flushes, 'writable export flushed');
    assert.equal(existsSync(s.socket), false);
    await s.stop();
  });

  it('replaces a stale socket file but refuses a live one', async () => {
    const a = await startServer({ exports: { d: new MemoryDevice(MiB) } });
    const { NbdServer } = await import('../../src/nbd/index.ts');
    const b = new NbdServer({ exports: { d: new MemoryDevice(MiB) } });
    await assert.rejects(b.listen({ socket: a.socket }), /another server is listening/);
    // Kill a's listener without unlinking: simulate a crashed server leaving its socket behind.
    await a.server.close();
    const net = await import('node:net');
    await new Promise<void>((res) => {
      const l = net.createServer().listen(a.socket, () => l.close(() => res()));
    });
    await b.listen({ socket: a.socket });
    const c = await RawClient.connect({ socket: a.socket });
    await c.handshake({ name: 'd' });
    c.close();
    await b.close();
    await a.stop();
  });
});

function optionBytes(option: number, data: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(IHAVEOPT, 0);
  h.writeUInt32BE(option, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

/** Writes `bytes` split at the given positions (taken modulo the length), pausing between pieces. */
async function sendSplit(c: RawClient, bytes: Buffer, cuts: number[]): Promise<void> {
  const points = [...new Set(cuts.map((p) => p % bytes.length))].sort((a, b) => a - b);
  let at = 0;
  for (const p of [...points, bytes.length]) {
    if (p <= at) continue;
    c.send(bytes.subarray(at, p));
    at = p;
    await new Promise((r) => setTimeout(r, 0));
  }
}
