/** The option-haggling phase, driven byte by byte from a raw socket. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MemoryDevice } from '../../src/io/memory.ts';
import { NbdServer } from '../../src/nbd/index.ts';
import { IHAVEOPT, OPT, REP, RawClient, TF, infoRequest, metaRequest } from './helpers/client.ts';
import { startServer, type Running } from './helpers/server.ts';

describe('nbd handshake', { timeout: 30_000 }, () => {
  let srv: Running;
  const disk = new MemoryDevice(1 << 20, 'disk');
  const ro = new MemoryDevice(3 * 512 + 512, 'ro');
  before(async () => {
    srv = await startServer({
      exports: new Map<string, MemoryDevice | { device: MemoryDevice; description?: string; readOnly?: boolean }>([
        ['disk', { device: disk, description: 'a RAM disk' }],
        ['ro', { device: ro, readOnly: true }],
      ]),
      defaultExport: 'disk',
    });
  });
  after(() => srv.stop());

  const connect = () => RawClient.connect({ socket: srv.socket });

  it('greets with fixed newstyle and no-zeroes', async () => {
    const c = await connect();
    assert.equal(await c.greeting(), 3);
    c.close();
  });

  it('lists exports with descriptions and rejects LIST with data', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags(1);
    const r = await c.option(OPT.LIST);
    assert.equal(r.at(-1)!.type, REP.ACK);
    const servers = r.filter((x) => x.type === REP.SERVER).map((x) => {
      const n = x.data.readUInt32BE(0);
      return [x.data.toString('utf8', 4, 4 + n), x.data.toString('utf8', 4 + n)];
    });
    assert.deepEqual(servers, [['disk', 'a RAM disk'], ['ro', '']]);
    const bad = await c.option(OPT.LIST, Buffer.from('x'));
    assert.equal(bad[0]!.type, REP.ERR_INVALID);
    c.close();
  });

  it('answers unknown options with ERR_UNSUP, STARTTLS with ERR_POLICY, and keeps going', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags(1);
    assert.equal((await c.option(99, Buffer.from('whatever')))[0]!.type, REP.ERR_UNSUP);
    assert.equal((await c.option(OPT.STARTTLS))[0]!.type, REP.ERR_POLICY);
    assert.equal((await c.option(11))[0]!.type, REP.ERR_UNSUP);
    const info = await c.option(OPT.INFO, infoRequest('disk', [1, 2, 3]));
    assert.equal(info.at(-1)!.type, REP.ACK);
    c.close();
  });

  it('INFO reports size, flags, block sizes, name and description; GO repeats them', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags(1);
    const info = await c.option(OPT.INFO, infoRequest('', [1, 2, 3]));
    const byType = new Map(info.filter((r) => r.type === REP.INFO).map((r) => [r.data.readUInt16BE(0), r.data]));
    const exp = byType.get(0)!;
    assert.equal(Number(exp.readBigUInt64BE(2)), 1 << 20);
    const flags = exp.readUInt16BE(10);
    assert.equal(flags & TF.READ_ONLY, 0);
    for (const f of [TF.HAS_FLAGS, TF.SEND_FLUSH, TF.SEND_FUA, TF.SEND_TRIM, TF.SEND_WRITE_ZEROES, TF.SEND_FAST_ZERO, TF.CAN_MULTI_CONN, TF.SEND_CACHE]) {
      assert.ok(flags & f, `flag ${f} set`);
    }
    assert.equal(flags & TF.SEND_DF, 0, 'no DF without structured replies');
    const bs = byType.get(3)!;
    assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [512, 4096, 64 << 20]);
    assert.equal(byType.get(1)!.toString('utf8', 2), 'disk', 'canonical name of the default export');
    assert.equal(byType.get(2)!.toString('utf8', 2), 'a RAM disk');
    const go = await c.option(OPT.GO, infoRequest('', [1, 2, 3]));
    assert.deepEqual(
      go.filter((r) => r.type === REP.INFO).map((r) => r.data.toString('hex')).sort(),
      info.filter((r) => r.type === REP.INFO).map((r) => r.data.toString('hex')).sort(),
    );
    c.close();
  });

  it('read-only exports advertise READ_ONLY and no write features', async () => {
    const c = await connect();
    await c.handshake({ name: 'ro', structured: true });
    assert.ok(c.flags & TF.READ_ONLY);
    assert.equal(c.flags & (TF.SEND_TRIM | TF.SEND_WRITE_ZEROES | TF.SEND_FAST_ZERO), 0);
    assert.ok(c.flags & TF.SEND_DF, 'DF once structured replies are on');
    c.close();
  });

  it('rejects unknown exports and malformed INFO without ending the session', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags(1);
    const r = await c.option(OPT.GO, infoRequest('nope', []));
    assert.equal(r.length, 1);
    assert.equal(r[0]!.type, REP.ERR_UNKNOWN);
    assert.match(r[0]!.data.toString(), /nope/);
    assert.equal((await c.option(OPT.INFO, Buffer.from([0, 0, 0, 9, 1])))[0]!.type, REP.ERR_INVALID);
    const wrongCount = infoRequest('disk', [1]);
    assert.equal((await c.option(OPT.INFO, wrongCount.subarray(0, wrongCount.length - 1)))[0]!.type, REP.ERR_INVALID);
    assert.equal((await c.option(OPT.GO, infoRequest('disk', []))).at(-1)!.type, REP.ACK);
    c.close();
  });

  it('negotiates metadata contexts: LIST wildcards, SET exact names, ids unique', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags(1);
    assert.equal((await c.option(OPT.SET_META, metaRequest('disk', ['base:allocation'])))[0]!.type, REP.ERR_INVALID, 'needs structured replies');
    assert.equal((await c.option(OPT.STRUCTURED_REPLY))[0]!.type, REP.ACK);
    const names = (rs: { type: number; data: Buffer }[]) => rs.filter((r) => r.type === REP.META_CONTEXT).map((r) => r.data.toString('utf8', 4));
    assert.deepEqual(names(await c.option(OPT.LIST_META, metaRequest('disk', []))), ['base:allocation', 'qemu:allocation-depth']);
    assert.deepEqual(names(await c.option(OPT.LIST_META, metaRequest('disk', ['base:']))), ['base:allocation']);
    assert.deepEqual(names(await c.option(OPT.LIST_META, metaRequest('disk', ['qemu:', 'x-other:']))), ['qemu:allocation-depth']);
    const set = await c.option(OPT.SET_META, metaRequest('disk', ['base:allocation', 'qemu:allocation-depth', 'base:', 'x-foo:bar']));
    const ids = set.filter((r) => r.type === REP.META_CONTEXT).map((r) => r.data.readUInt32BE(0));
    assert.deepEqual(names(set), ['base:allocation', 'qemu:allocation-depth']);
    assert.equal(new Set(ids).size, 2);
    assert.equal(set.at(-1)!.type, REP.ACK);
    assert.equal((await c.option(OPT.SET_META, metaRequest('nope', ['base:allocation'])))[0]!.type, REP.ERR_UNKNOWN);
    const trunc = metaRequest('disk', ['base:allocation']);
    assert.equal((await c.option(OPT.SET_META, trunc.subarray(0, trunc.length - 3)))[0]!.type, REP.ERR_INVALID);
    c.close();
  });

  it('EXPORT_NAME sends size and flags, with or without the 124 zero bytes', async () => {
    for (const [clientFlags, len] of [[1, 134], [3, 10]] as const) {
      const c = await connect();
      await c.greeting();
      c.sendClientFlags(clientFlags);
      c.sendOption(OPT.EXPORT_NAME, Buffer.from('ro'));
      const r = await c.readExactly(len);
      assert.equal(Number(r.readBigUInt64BE(0)), ro.size);
      assert.ok(r.readUInt16BE(8) & TF.READ_ONLY);
      // In transmission now: a read works.
      const res = await c.read(0, 512);
      assert.equal(res.error, 0);
      c.close();
    }
  });

  it('ABORT is acknowledged and the server closes', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags(1);
    const r = await c.option(OPT.ABORT);
    assert.equal(r[0]!.type, REP.ACK);
    assert.ok(await c.closedByServer());
  });

  it('disconnects on unknown client flags, bad option magic, unknown EXPORT_NAME and huge options', async () => {
    const cases: ((c: RawClient) => void)[] = [
      (c) => c.sendClientFlags(1 | 8),
      (c) => {
        c.sendClientFlags(1);
        c.sendOption(OPT.LIST, Buffer.alloc(0), IHAVEOPT + 1n);
      },
      (c) => {
        c.sendClientFlags(1);
        c.sendOption(OPT.EXPORT_NAME, Buffer.from('nope'));
      },
      (c) => {
        c.sendClientFlags(1);
        const h = Buffer.alloc(16);
        h.writeBigUInt64BE(IHAVEOPT, 0);
        h.writeUInt32BE(OPT.GO, 8);
        h.writeUInt32BE(0xffffffff, 12);
        c.send(h);
      },
    ];
    for (const send of cases) {
      const c = await connect();
      await c.greeting();
      send(c);
      assert.ok(await c.closedByServer());
      assert.equal(c.buffered, 0, 'nothing sent before the disconnect');
    }
    // The server still serves a well-behaved client.
    const ok = await connect();
    await ok.handshake({ name: 'disk' });
    assert.equal((await ok.read(0, 4096)).error, 0);
    ok.close();
  });

  it('drops clients that stall in the handshake', async () => {
    const s = await startServer({ exports: { d: disk }, handshakeTimeoutMs: 150 });
    try {
      const c = await RawClient.connect({ socket: s.socket });
      await c.greeting();
      c.sendClientFlags(1);
      c.send(Buffer.from('IHAVE')); // a truncated option header, then silence
      assert.ok(await c.closedByServer());
      assert.ok(s.events.some((e) => e.type === 'protocol-error' && /timed out/.test(e.message)));
    } finally {
      await s.stop();
    }
  });

  it('several exports without a default: the empty name is unknown', async () => {
    const s = await startServer({ exports: { a: disk, b: ro } });
    try {
      const c = await RawClient.connect({ socket: s.socket });
      await c.greeting();
      c.sendClientFlags(1);
      assert.equal((await c.option(OPT.GO, infoRequest('', [])))[0]!.type, REP.ERR_UNKNOWN);
      assert.equal((await c.option(OPT.GO, infoRequest('b', []))).at(-1)!.type, REP.ACK);
      c.close();
    } finally {
      await s.stop();
    }
  });

  it('refuses bad server configurations', () => {
    assert.throws(() => new NbdServer({ exports: {} }), /at least one export/);
    assert.throws(() => new NbdServer({ exports: { a: disk }, defaultExport: 'b' }), /default export/);
    assert.throws(() => new NbdServer({ exports: { a: disk }, maxPayload: 1000 }), /maxPayload/);
  });
});
