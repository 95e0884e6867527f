/**
 * Fault injection between the client and a real docker-registry: resets, 5xx, stalls,
 * truncated and corrupted bodies, expired tokens, ignored Range, redirects, forward proxy.
 * Reads either succeed after retries with the right bytes or fail with a typed error; a
 * broken exchange never leaves wrong bytes in the cache.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CredentialStore } from '../../src/remote/auth.ts';
import { BlobCache } from '../../src/remote/cache.ts';
import { AuthError, ProtocolError, ServerError, TimeoutError } from '../../src/remote/errors.ts';
import { LazySource } from '../../src/remote/lazy-source.ts';
import { fillCache } from '../../src/remote/download.ts';
import { RegistryBlobSource, RegistryClient, type RegistryOptions } from '../../src/remote/registry.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { startTokenServer, type TokenServer } from './helpers/token-server.ts';
import { startFaultProxy, type Fault, type FaultProxy } from './helpers/fault-proxy.ts';
import { blob, type TestBlob } from './helpers/blobs.ts';
import { tempDir } from '../helpers/temp.ts';

const USER = { username: 'alice', password: 'pw' };
const isBlobGet = (r: { method: string; url: string }) => r.method === 'GET' && /\/blobs\/sha256:/.test(r.url);

describe('faults on a Basic-auth registry', () => {
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  let data: TestBlob;
  before(async () => {
    reg = await startRegistry({ users: { alice: 'pw' } });
    proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port });
    data = blob('faulty', 2 * 1024 * 1024 + 333);
    const c = client(reg.host);
    await c.repository('f/app').putBlob(data.digest, data.source());
    await c.close();
  });
  after(async () => {
    await proxy.stop();
    await reg.stop();
  });

  function client(host: string, extra: RegistryOptions = {}): RegistryClient {
    const creds = new CredentialStore();
    creds.add(host, USER);
    return new RegistryClient(host, { credentials: creds, retryBaseMs: 5, idleTimeoutMs: 400, ...extra });
  }

  /** Faults the first `k` blob GETs with `fault`, then lets requests through. */
  function faultFirst(k: number, fault: Fault): () => number {
    let hit = 0;
    proxy.rule = (r) => (isBlobGet(r) && hit < k ? (hit++, fault) : undefined);
    return () => hit;
  }

  async function readAt(src: RegistryBlobSource, off: number, len: number): Promise<Buffer> {
    const buf = Buffer.alloc(len);
    assert.equal(await src.read(buf, off), len);
    return buf;
  }

  for (const fault of [{ kind: 'reset' }, { kind: 'status', status: 503 }, { kind: 'status', status: 429 }, { kind: 'stall' }, { kind: 'stall-body' }, { kind: 'truncate' }] as Fault[]) {
    test(`a Range read survives ${fault.kind}${'status' in fault ? ' ' + fault.status : ''} (twice)`, async () => {
      const c = client(proxy.host);
      const src = (await c.repository('f/app').openBlob(data.digest)) as RegistryBlobSource;
      const hits = faultFirst(2, fault);
      const got = await readAt(src, 1_000_000, 300_000);
      assert.equal(hits(), 2);
      assert.ok(got.equals(data.bytes.subarray(1_000_000, 1_300_000)));
      proxy.rule = () => undefined;
      await c.close();
    });
  }

  test('a fault that persists ends in a typed error, not a hang', async () => {
    const c = client(proxy.host, { retries: 2 });
    const src = (await c.repository('f/app').openBlob(data.digest)) as RegistryBlobSource;
    proxy.rule = (r) => (isBlobGet(r) ? { kind: 'status', status: 502 } : undefined);
    await assert.rejects(readAt(src, 0, 4096), (e: Error) => e instanceof ServerError && (e as ServerError).errno === 'EIO');
    proxy.rule = (r) => (isBlobGet(r) ? { kind: 'stall' } : undefined);
    await assert.rejects(readAt(src, 0, 4096), TimeoutError);
    proxy.rule = () => undefined;
    assert.ok((await readAt(src, 0, 4096)).equals(data.bytes.subarray(0, 4096)), 'client still usable');
    await c.close();
  });

  test('a proxy that drops Range cannot feed wrong bytes', async () => {
    const c = client(proxy.host, { retries: 1 });
    const src = (await c.repository('f/app').openBlob(data.digest)) as RegistryBlobSource;
    proxy.rule = (r) => (isBlobGet(r) ? { kind: 'ignore-range' } : undefined);
    await assert.rejects(readAt(src, 5000, 4096), (e: Error) => e instanceof ProtocolError && /ignored Range/.test(e.message));
    proxy.rule = () => undefined;
    await c.close();
  });

  test('redirects to another origin get no Authorization header', async () => {
    const c = client(proxy.host);
    const src = (await c.repository('f/app').openBlob(data.digest)) as RegistryBlobSource;
    proxy.rule = (r) => (isBlobGet(r) ? { kind: 'redirect', origin: `http://localhost:${proxy.port}` } : undefined);
    proxy.redirectHeaders = { authorization: 'Basic ' + Buffer.from('alice:pw').toString('base64') };
    const mark = proxy.seen.length;
    const got = await readAt(src, 777, 100_000);
    assert.ok(got.equals(data.bytes.subarray(777, 100_777)));
    const redirected = proxy.seen.slice(mark).filter((r) => r.redirected);
    assert.ok(redirected.length >= 1);
    for (const r of redirected) assert.equal(r.headers.authorization, undefined, 'Authorization leaked to the redirect target');
    proxy.rule = () => undefined;
    proxy.redirectHeaders = {};
    await c.close();
  });

  test('the proxy setting routes every request through an HTTP proxy', async () => {
    const c = client(reg.host, { proxy: `http://${proxy.host}` });
    const mark = proxy.seen.length;
    const src = (await c.repository('f/app').openBlob(data.digest)) as RegistryBlobSource;
    assert.ok((await readAt(src, 42, 1000)).equals(data.bytes.subarray(42, 1042)));
    assert.ok(proxy.seen.length - mark >= 2, 'HEAD and GET went through the proxy');
    await c.close();
  });

  test('lazy reads through flaky transport: the cache ends up exact and digest-verified', async (t) => {
    const dir = await tempDir(t);
    const cache = await BlobCache.open({ dir, capacity: 64 << 20, unit: 64 * 1024 });
    const c = client(proxy.host, { retries: 6 });
    let n = 0;
    const kinds: Fault[] = [{ kind: 'reset' }, { kind: 'truncate' }, { kind: 'status', status: 500 }, { kind: 'stall-body' }];
    proxy.rule = (r) => (isBlobGet(r) && n++ % 3 === 0 ? kinds[(n / 3) % kinds.length | 0] : undefined);
    const entry = await cache.entry(data.digest, data.bytes.length);
    const lazy = new LazySource(await c.repository('f/app').openBlob(data.digest, data.bytes.length), { store: entry });
    const buf = Buffer.alloc(8192);
    for (let i = 0; i < 40; i++) {
      const off = (i * 1_234_567) % (data.bytes.length - 8192);
      assert.equal(await lazy.read(buf, off), 8192);
      assert.ok(buf.equals(data.bytes.subarray(off, off + 8192)), `read at ${off}`);
    }
    assert.equal(await fillCache(lazy), true);
    assert.ok(entry.complete);
    proxy.rule = () => undefined;
    await lazy.close();
    await cache.close();
    await c.close();
  });

  test('a corrupted body is caught by the digest check and the blob is refetched', async (t) => {
    const dir = await tempDir(t);
    const cache = await BlobCache.open({ dir, capacity: 64 << 20, unit: 256 * 1024 });
    // A generous timeout: the proxy holds the corrupted body back until it has it all, and a
    // retry after a timeout on a loaded machine would fetch clean bytes instead.
    // One range per request, so the corruption lands in a unit's bytes (in a multi-range
    // answer it may hit a part's delimiter, and that part is fetched again on its own).
    const c = client(proxy.host, { idleTimeoutMs: 10_000, multiRange: false });
    let corrupted = 0;
    proxy.rule = (r) => (isBlobGet(r) && r.headers.authorization && corrupted++ === 1 ? { kind: 'corrupt' } : undefined);
    const entry = await cache.entry(data.digest, data.bytes.length);
    const lazy = new LazySource(await c.repository('f/app').openBlob(data.digest, data.bytes.length), { store: entry, maxRequest: 256 * 1024 });
    assert.equal(await fillCache(lazy), false, 'a corrupted unit must fail the whole-blob check');
    assert.equal(entry.heldUnits, 0, 'the failed blob is dropped');
    proxy.rule = () => undefined;
    assert.equal(await fillCache(lazy), true);
    const all = Buffer.alloc(data.bytes.length);
    await lazy.read(all, 0);
    assert.ok(all.equals(data.bytes));
    await lazy.close();
    await cache.close();
    await c.close();
  });
});

describe('expired tokens', () => {
  let tokens: TokenServer;
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  before(async () => {
    tokens = await startTokenServer({ users: { alice: 'pw' } });
    reg = await startRegistry({ token: tokens });
    proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port });
  });
  after(async () => {
    await proxy.stop();
    await reg.stop();
    await tokens.stop();
  });

  test('a 401 on a cached token fetches a new one and the read succeeds', async () => {
    const creds = new CredentialStore();
    creds.add(proxy.host, USER);
    const c = new RegistryClient(proxy.host, { credentials: creds, retryBaseMs: 5 });
    const repo = c.repository('exp/app');
    const b = blob('expiring', 100_000);
    await repo.putBlob(b.digest, b.source());
    const src = await repo.openBlob(b.digest);
    const buf = Buffer.alloc(1000);
    await src.read(buf, 0);
    const tokensBefore = tokens.requests.length;
    const challenge = `Bearer realm="${tokens.realm}",service="${tokens.service}",scope="repository:exp/app:pull"`;
    const revoked = new Set<string>();
    proxy.rule = (r) => {
      const auth = String(r.headers.authorization ?? '');
      if (!isBlobGet(r)) return undefined;
      if (revoked.size === 0) revoked.add(auth);
      return revoked.has(auth) ? { kind: 'unauthorized', challenge } : undefined;
    };
    await src.read(buf, 5000);
    assert.ok(buf.equals(b.bytes.subarray(5000, 6000)));
    assert.equal(tokens.requests.length, tokensBefore + 1, 'exactly one new token');
    proxy.rule = (r) => (isBlobGet(r) ? { kind: 'unauthorized', challenge } : undefined);
    await assert.rejects(src.read(buf, 0), AuthError);
    proxy.rule = () => undefined;
    await c.close();
  });
});
