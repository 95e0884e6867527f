/**
 * Several ranges of a blob in one GET: reads of a registry blob issued in the same turn go
 * out as one multi-range request where the registry answers multipart/byteranges (the real
 * docker-registry does), and as separate requests once an answer shows the server does not
 * take them that way (a 200, a single range, a malformed or short multipart body), always
 * with the exact bytes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { RegistryClient, type RegistryBlobSource } from '../../src/remote/registry.ts';
import { ProtocolError, RemoteNotFoundError } from '../../src/remote/errors.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { listenTracked, startFaultProxy, type FaultProxy } from './helpers/fault-proxy.ts';
import { blob, type TestBlob } from './helpers/blobs.ts';

const K = 1024;
const isBlobGet = (r: { method: string; url: string }) => r.method === 'GET' && /\/blobs\/sha256:/.test(r.url);

/** Reads `ranges` of `src` all in one turn; resolves their bytes. */
async function readTogether(src: RegistryBlobSource, ranges: Array<[number, number]>): Promise<Buffer[]> {
  const bufs = ranges.map(([, n]) => Buffer.alloc(n));
  const got = await Promise.all(ranges.map(([off], i) => src.read(bufs[i]!, off)));
  assert.deepEqual(got, ranges.map(([, n]) => n));
  return bufs;
}

function expectBytes(data: TestBlob, ranges: Array<[number, number]>, bufs: Buffer[]): void {
  ranges.forEach(([off, n], i) => assert.ok(bufs[i]!.equals(data.bytes.subarray(off, off + n)), `range ${off}+${n} exact`));
}

describe('multi-range reads against docker-registry', () => {
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  let data: TestBlob;
  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port });
    data = blob('multi-range', 3 * 256 * K + 777);
    const c = new RegistryClient(reg.host);
    await c.repository('m/app').putBlob(data.digest, data.source());
    await c.close();
  });
  after(async () => {
    await proxy.stop();
    await reg.stop();
  });

  test('reads issued together leave as one request, and each gets its own bytes', async () => {
    const c = new RegistryClient(proxy.host);
    const src = (await c.repository('m/app').openBlob(data.digest, data.bytes.length)) as RegistryBlobSource;
    const before = proxy.seen.filter(isBlobGet).length;
    // Out of order, one touching the blob's end, one single byte.
    const ranges: Array<[number, number]> = [[data.bytes.length - 5000, 5000], [0, 512], [300 * K, 1], [256 * K, 4 * K]];
    expectBytes(data, ranges, await readTogether(src, ranges));
    const gets = proxy.seen.filter(isBlobGet).slice(before);
    assert.equal(gets.length, 1, 'one GET for four ranges');
    assert.match(String(gets[0]!.headers.range), /^bytes=\d+-\d+(,\d+-\d+){3}$/);
    assert.equal(c.multiRange, true);
    // A read on its own is a plain single-range request.
    expectBytes(data, [[1000, 10]], await readTogether(src, [[1000, 10]]));
    assert.match(String(proxy.seen.at(-1)!.headers.range), /^bytes=1000-1009$/);
    await c.close();
  });

  test('overlapping reads go out in separate requests (a registry may refuse overlaps)', async () => {
    const c = new RegistryClient(proxy.host);
    const src = (await c.repository('m/app').openBlob(data.digest, data.bytes.length)) as RegistryBlobSource;
    const before = proxy.seen.filter(isBlobGet).length;
    const ranges: Array<[number, number]> = [[0, 8 * K], [4 * K, 8 * K], [100 * K, 100]];
    expectBytes(data, ranges, await readTogether(src, ranges));
    const gets = proxy.seen.filter(isBlobGet).slice(before);
    assert.equal(gets.length, 2);
    assert.deepEqual(gets.map((g) => String(g.headers.range).split(',').length).sort(), [1, 2]);
    await c.close();
  });

  test('a proxy that drops Range (a 200 with the whole blob): the ranges are fetched separately, and later reads ask one range each', async () => {
    const c = new RegistryClient(proxy.host);
    const src = (await c.repository('m/app').openBlob(data.digest, data.bytes.length)) as RegistryBlobSource;
    let dropped = 0;
    proxy.rule = (r) => (isBlobGet(r) && String(r.headers.range).includes(',') ? (dropped++, { kind: 'ignore-range' }) : undefined);
    try {
      const before = proxy.seen.filter(isBlobGet).length;
      const ranges: Array<[number, number]> = [[0, 4 * K], [512 * K, 4 * K]];
      expectBytes(data, ranges, await readTogether(src, ranges));
      assert.equal(dropped, 1);
      assert.equal(c.multiRange, false);
      expectBytes(data, ranges, await readTogether(src, ranges));
      const gets = proxy.seen.filter(isBlobGet).slice(before);
      assert.equal(gets.length, 5, 'one refused multi-range GET, then one GET per range');
      assert.ok(gets.slice(1).every((g) => !String(g.headers.range).includes(',')));
    } finally {
      proxy.rule = () => undefined;
      await c.close();
    }
  });

  test('a missing blob fails every read with a not-found error', async () => {
    const c = new RegistryClient(proxy.host);
    const missing = blob('multi-range-missing', 64 * K);
    const src = (await c.repository('m/app').openBlob(missing.digest, missing.bytes.length)) as RegistryBlobSource;
    const reads = [0, 32 * K].map((off) => src.read(Buffer.alloc(100), off));
    for (const r of reads) await assert.rejects(r, RemoteNotFoundError);
    await c.close();
  });
});

/** How the hand-made server answers a multi-range GET. */
type Answer = 'multipart' | 'reversed' | 'first-only' | 'bad-part-range' | 'short' | 'garbage' | '416' | 'unasked-part';

/**
 * A registry stand-in serving one blob, answering a multi-range GET the way `answer` says and
 * single ranges properly; counts GETs and multi-range GETs.
 */
async function startRangeServer(data: TestBlob) {
  const sockets = new Set<net.Socket>();
  const state = { answer: 'multipart' as Answer, gets: 0, multi: 0, host: '', stop: async () => {} };
  const server = http.createServer((req, res) => {
    state.gets++;
    const spec = /^bytes=(.*)$/.exec(req.headers.range ?? '')?.[1];
    const ranges = (spec ?? '').split(',').map((r) => r.split('-').map(Number) as [number, number]);
    const total = data.bytes.length;
    const part = ([a, b]: [number, number]) => data.bytes.subarray(a, b + 1);
    if (ranges.length === 1) {
      const [a, b] = ranges[0]!;
      res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${total}`, 'content-length': b - a + 1 }).end(part([a, b]));
      return;
    }
    state.multi++;
    const B = 'XyZ-boundary';
    const section = (r: [number, number], body = part(r), cr = `bytes ${r[0]}-${r[1]}/${total}`) =>
      Buffer.concat([Buffer.from(`\r\n--${B}\r\nContent-Type: application/octet-stream\r\nContent-Range: ${cr}\r\n\r\n`), body]);
    const close = Buffer.from(`\r\n--${B}--\r\n`);
    const mp = { 'content-type': `multipart/byteranges; boundary=${B}` };
    switch (state.answer) {
      case 'multipart':
        res.writeHead(206, mp).end(Buffer.concat([...ranges.map((r) => section(r)), close]));
        return;
      case 'reversed':
        res.writeHead(206, { 'content-type': `multipart/byteranges; boundary="${B}"` }).end(Buffer.concat([Buffer.from('preamble'), ...ranges.reverse().map((r) => section(r)), close, Buffer.from('epilogue')]));
        return;
      case 'first-only': {
        const [a, b] = ranges[0]!;
        res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${total}`, 'content-length': b - a + 1 }).end(part([a, b]));
        return;
      }
      case 'bad-part-range':
        res.writeHead(206, mp).end(Buffer.concat([section(ranges[0]!), section(ranges[1]!, part(ranges[1]!), `bytes ${ranges[1]![0] + 1}-${ranges[1]![1] + 1}/${total}`), close]));
        return;
      case 'unasked-part':
        res.writeHead(206, mp).end(Buffer.concat([section(ranges[0]!), section([5, 9]), ...ranges.slice(1).map((r) => section(r)), close]));
        return;
      case 'short':
        res.writeHead(206, mp).end(Buffer.concat([section(ranges[0]!), section(ranges[1]!).subarray(0, 100)]));
        return;
      case 'garbage':
        res.writeHead(206, mp).end(Buffer.alloc(64 * K, 0x41));
        return;
      case '416':
        res.writeHead(416, { 'content-range': `bytes */${total}` }).end();
        return;
    }
  });
  const port = await listenTracked(server, sockets);
  state.host = `127.0.0.1:${port}`;
  state.stop = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return state;
}

describe('multi-range answers a registry might give', () => {
  const data = blob('multi-range-answers', 200 * K + 3);
  let srv: Awaited<ReturnType<typeof startRangeServer>>;
  before(async () => {
    srv = await startRangeServer(data);
  });
  after(() => srv.stop());

  const ranges: Array<[number, number]> = [[0, 4 * K], [50 * K, 10 * K], [200 * K - 7, 10]];
  for (const [answer, keeps] of [
    ['multipart', true],
    ['reversed', true],
    ['first-only', false],
    ['bad-part-range', false],
    ['unasked-part', false],
    ['short', false],
    ['garbage', false],
    ['416', false],
  ] as Array<[Answer, boolean]>) {
    test(`${answer}: exact bytes, ${keeps ? 'in one request' : 'the missing ranges fetched one by one, and multi-range turned off'}`, async () => {
      srv.answer = answer;
      const c = new RegistryClient(srv.host, { retries: 0 });
      const src = (await c.repository('x/y').openBlob(data.digest, data.bytes.length)) as RegistryBlobSource;
      const gets = srv.gets;
      expectBytes(data, ranges, await readTogether(src, ranges));
      assert.equal(c.multiRange, keeps);
      assert.equal(srv.gets - gets, keeps ? 1 : answer === 'first-only' ? 3 : answer === 'bad-part-range' || answer === 'unasked-part' || answer === 'short' ? 3 : 4);
      await c.close();
    });
  }

  test('a part that claims another blob size is not taken', async () => {
    srv.answer = 'multipart';
    const c = new RegistryClient(srv.host, { retries: 0 });
    const src = (await c.repository('x/y').openBlob(data.digest, data.bytes.length + 1)) as RegistryBlobSource;
    const reads = ranges.map(([off, n]) => src.read(Buffer.alloc(n), off));
    // Separately, each range's Content-Range names the true size too: a typed error, no bytes.
    for (const r of reads) await assert.rejects(r, ProtocolError);
    assert.equal(c.multiRange, false);
    await c.close();
  });
});
