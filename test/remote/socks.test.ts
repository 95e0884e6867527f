/**
 * Registry traffic through a real SOCKS5 proxy (microsocks on 127.0.0.1): pushes, reads and
 * lazy reads with socks5:// and socks5h://, RFC 1929 user/password, refused credentials,
 * a proxy that drops connections mid-body (retries recover with the right bytes, or a typed
 * error), a proxy scheme the client cannot speak (an error, never a direct connection), and
 * the HTTP(S)_PROXY / ALL_PROXY / NO_PROXY environment.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { BlobCache } from '../../src/remote/cache.ts';
import { NetworkError } from '../../src/remote/errors.ts';
import { LazySource } from '../../src/remote/lazy-source.ts';
import { parseProxy, ProxyAuthError, ProxyRoutes, UnsupportedProxyError } from '../../src/remote/proxy.ts';
import { RegistryClient, type RegistryOptions } from '../../src/remote/registry.ts';
import type { ByteSource } from '../../src/io/types.ts';
import { blob, type TestBlob } from './helpers/blobs.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { socksTarget, startMicrosocks, startRelay, type Relay, type RunningSocks } from './helpers/socks.ts';
import { suiteTempDir, tempDir } from '../helpers/temp.ts';
import { obd, serveJson } from '../helpers/cli.ts';
import { FIXTURES } from '../helpers/recipes.ts';

const AUTH = { user: 'sox', password: 's3cret:/@' };
const cred = `${encodeURIComponent(AUTH.user)}:${encodeURIComponent(AUTH.password)}`;

async function readAt(src: ByteSource, off: number, len: number): Promise<Buffer> {
  const buf = Buffer.alloc(len);
  assert.equal(await src.read(buf, off), len);
  return buf;
}

describe('registry traffic through a SOCKS5 proxy', () => {
  let reg: RunningRegistry;
  let socks: RunningSocks;
  let relay: Relay;
  let data: TestBlob;
  before(async () => {
    reg = await startRegistry();
    socks = await startMicrosocks(AUTH);
    relay = await startRelay(socks.port);
    data = blob('socks', 3 * 1024 * 1024 + 77);
  });
  after(async () => {
    await relay.stop();
    await socks.stop();
    await reg.stop();
  });

  const client = (proxy: string, extra: RegistryOptions = {}) => new RegistryClient(reg.host, { plainHttp: true, proxy, retryBaseMs: 5, idleTimeoutMs: 2000, ...extra });

  test('socks5:// with user and password: a push and reads go through the proxy, bytes exact', async () => {
    const c = client(`socks5://${cred}@${relay.host}`);
    const before = { n: relay.connections, bytes: relay.bytesDown };
    await c.repository('s/app').putBlob(data.digest, data.source());
    const src = await c.repository('s/app').openBlob(data.digest, data.bytes.length);
    assert.ok((await readAt(src, 0, data.bytes.length)).equals(data.bytes));
    assert.ok((await readAt(src, 1_000_001, 4096)).equals(data.bytes.subarray(1_000_001, 1_004_097)));
    await c.close();
    assert.ok(relay.connections > before.n, 'connections went through the proxy');
    assert.ok(relay.bytesDown - before.bytes >= data.bytes.length, 'the blob came through the proxy');
    // socks5: the client resolved the name itself and sent the proxy an address.
    assert.deepEqual(socksTarget(relay.firstBytes[before.n]!), { kind: 'ipv4', host: '127.0.0.1', user: AUTH.user });
  });

  test('socks5h:// hands the host name to the proxy to resolve', async () => {
    const c = new RegistryClient(`localhost:${reg.port}`, { plainHttp: true, proxy: `socks5h://${cred}@${relay.host}`, retryBaseMs: 5 });
    const mark = relay.connections;
    const src = await c.repository('s/app').openBlob(data.digest, data.bytes.length);
    assert.ok((await readAt(src, 12345, 65536)).equals(data.bytes.subarray(12345, 12345 + 65536)));
    await c.close();
    assert.ok(relay.connections > mark);
    assert.deepEqual(socksTarget(relay.firstBytes[mark]!), { kind: 'name', host: 'localhost', user: AUTH.user }, 'the proxy got the name, not an address');
  });

  test('refused or missing credentials are an AuthError at once, not retried', async () => {
    const mark = relay.connections;
    const wrong = client(`socks5://sox:nope@${relay.host}`, { retries: 4, retryBaseMs: 200 });
    const t0 = Date.now();
    await assert.rejects(wrong.repository('s/app').openBlob(data.digest, data.bytes.length).then((s) => readAt(s, 0, 10)), (e: Error) => {
      assert.ok(e instanceof ProxyAuthError, `${e.name}: ${e.message}`);
      assert.match(e.message, /refused the user name and password from --proxy/);
      assert.doesNotMatch(e.message, /nope/, 'the password is not printed');
      return true;
    });
    assert.ok(Date.now() - t0 < 1500, 'no backoff');
    assert.equal(relay.connections - mark, 1, 'one attempt');
    await wrong.close();
    const none = client(`socks5://${relay.host}`);
    await assert.rejects(none.repository('s/app').openBlob(data.digest, data.bytes.length).then((s) => readAt(s, 0, 10)), (e: Error) => e instanceof ProxyAuthError && /wants a user name and password/.test(e.message));
    await none.close();
  });

  test('a proxy dropping connections mid-body: retries recover, the cache holds exact bytes', async (t) => {
    const dir = await tempDir(t);
    const cache = await BlobCache.open({ dir, capacity: 64 << 20, unit: 256 * 1024 });
    const c = client(`socks5h://${cred}@${relay.host}`, { retries: 6 });
    const start = relay.connections;
    // The first three new connections are cut 100 KiB into what the proxy sends back.
    relay.cutAfter = (n) => (n - start < 3 ? 100 * 1024 : undefined);
    const entry = await cache.entry(data.digest, data.bytes.length);
    const lazy = new LazySource(await c.repository('s/app').openBlob(data.digest, data.bytes.length), { store: entry, unit: 256 * 1024 });
    for (let i = 0; i < 12; i++) {
      const off = (i * 271_828) % (data.bytes.length - 300_000);
      assert.ok((await readAt(lazy, off, 300_000)).equals(data.bytes.subarray(off, off + 300_000)), `read ${i}`);
    }
    assert.ok(relay.connections - start >= 4, 'connections were cut and made again');
    relay.cutAfter = () => undefined;
    await lazy.close();
    await cache.close();
    await c.close();
  });

  test('a proxy that cuts every connection: a typed NetworkError, never wrong bytes', async () => {
    const c = client(`socks5://${cred}@${relay.host}`, { retries: 2 });
    const src = await c.repository('s/app').openBlob(data.digest, data.bytes.length);
    relay.cutAfter = () => 50_000;
    try {
      const buf = Buffer.alloc(1 << 20);
      await assert.rejects(src.read(buf, 0), (e: Error) => e instanceof NetworkError && /ended after|closed|aborted|socket hang up|reset/i.test(e.message));
    } finally {
      relay.cutAfter = () => undefined;
      await c.close();
    }
  });

  test('the environment: ALL_PROXY routes, NO_PROXY exempts, --proxy wins', () => {
    const url = new URL(`http://${reg.host}/v2/`);
    const env = { ALL_PROXY: `socks5h://${relay.host}`, HTTPS_PROXY: 'http://127.0.0.1:3128' };
    assert.equal(new ProxyRoutes(undefined, env).forUrl(url)?.display, `socks5h://${relay.host}`);
    assert.equal(new ProxyRoutes(undefined, env).forUrl(new URL('https://r.example/v2/'))?.display, 'http://127.0.0.1:3128');
    for (const no of ['127.0.0.1', '*', '127.0.0.0/8', `127.0.0.1:${reg.port}`, ' other.example , 127.0.0.1']) {
      assert.equal(new ProxyRoutes(undefined, { ...env, NO_PROXY: no }).forUrl(url), undefined, `NO_PROXY=${no}`);
    }
    assert.ok(new ProxyRoutes(undefined, { ...env, NO_PROXY: '127.0.0.1:1' }).forUrl(url), 'another port is not exempt');
    assert.equal(new ProxyRoutes(undefined, { HTTP_PROXY: 'http://p:1', no_proxy: 'example.com' }).forUrl(new URL('http://r.example.com/')), undefined, 'subdomains are exempt');
    assert.equal(new ProxyRoutes(undefined, { HTTP_PROXY: 'http://p:1', no_proxy: 'example.com' }).forUrl(new URL('http://notexample.com/'))?.display, 'http://p:1');
    assert.equal(new ProxyRoutes(`socks5://${relay.host}`, { ...env, NO_PROXY: '*' }).forUrl(url)?.display, `socks5://${relay.host}`);
    assert.equal(new ProxyRoutes(undefined, {}).forUrl(url), undefined);
  });

  test('a proxy the client cannot speak is an error, never a direct connection', () => {
    for (const bad of ['socks4://127.0.0.1:1080', 'socks://127.0.0.1:1080', 'ftp://p:21', 'not a url', 'socks5://127.0.0.1:1080/path']) {
      assert.throws(() => parseProxy(bad), (e: Error) => e instanceof UnsupportedProxyError && e.errno === 'EINVAL' && /--proxy/.test(e.message), bad);
      assert.throws(() => new RegistryClient(reg.host, { proxy: bad }), UnsupportedProxyError, bad);
    }
    assert.throws(() => new ProxyRoutes(undefined, { https_proxy: 'socks4a://127.0.0.1:1080' }), (e: Error) => e instanceof UnsupportedProxyError && /^https_proxy: proxy scheme "socks4a"/.test(e.message));
  });
});

describe('an HTTPS registry through a SOCKS5 proxy', () => {
  let reg: RunningRegistry;
  let socks: RunningSocks;
  let relay: Relay;
  const tmp = suiteTempDir('obd-socks-tls-');
  before(async () => {
    const certPath = path.join(tmp.path, 'cert.pem');
    const keyPath = path.join(tmp.path, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'], { stdio: 'ignore' });
    reg = await startRegistry({ tls: { certPath, keyPath } });
    socks = await startMicrosocks();
    relay = await startRelay(socks.port);
  });
  after(async () => {
    await relay.stop();
    await socks.stop();
    await reg.stop();
  });

  test('TLS runs inside the tunnel: the certificate is checked for the registry\'s name, --insecure accepts it', async () => {
    const strict = new RegistryClient(`localhost:${reg.port}`, { plainHttp: false, retries: 0, proxy: `socks5h://${relay.host}` });
    await assert.rejects(strict.repository('tls/app').ping(), (e: Error) => e instanceof NetworkError && /certificate/i.test(e.message));
    await strict.close();
    const c = new RegistryClient(`localhost:${reg.port}`, { plainHttp: false, insecure: true, proxy: `socks5h://${relay.host}` });
    const mark = relay.connections;
    const b = blob('socks-tls', 300_000);
    assert.equal(await c.repository('tls/app').putBlob(b.digest, b.source()), 'uploaded');
    const src = await c.repository('tls/app').openBlob(b.digest);
    assert.ok((await readAt(src, 1234, 200_000)).equals(b.bytes.subarray(1234, 201_234)));
    await c.close();
    assert.ok(relay.connections > mark);
    assert.deepEqual(socksTarget(relay.firstBytes[mark]!), { kind: 'name', host: 'localhost', user: undefined });
    assert.ok(relay.bytesDown >= 200_000);
  });
});

describe('obd push, pull and serve --proxy socks5h://', () => {
  let reg: RunningRegistry;
  let socks: RunningSocks;
  let relay: Relay;
  before(async () => {
    reg = await startRegistry();
    socks = await startMicrosocks(AUTH);
    relay = await startRelay(socks.port);
  });
  after(async () => {
    await relay.stop();
    await socks.stop();
    await reg.stop();
  });

  test('push, pull and a lazy read through nbdcopy all go through the proxy', async (t) => {
    const home = await tempDir(t);
    const env = { HOME: home, DOCKER_CONFIG: path.join(home, '.docker') };
    const proxy = `socks5h://${cred}@${relay.host}`;
    const ref = `localhost:${reg.port}/px/app:v1`;
    const layers = [path.join(FIXTURES, 'lsmt', 'layer1.lsmt'), path.join(FIXTURES, 'lsmt', 'layer2.lsmt')];
    let mark = relay.bytesDown;
    const push = await obd(['push', '--json', '--plain-http', '--proxy', proxy, ...layers, ref], { env });
    assert.equal(push.code, 0, push.stderr);
    assert.ok(relay.bytesDown > mark, 'push went through the proxy');
    mark = relay.bytesDown;
    const pull = await obd(['pull', '--json', '--plain-http', '--proxy', proxy, ref, path.join(home, 'pulled')], { env });
    assert.equal(pull.code, 0, pull.stderr);
    assert.ok((await readdir(path.join(home, 'pulled'))).length >= 2);
    assert.ok(relay.bytesDown - mark > 100_000, 'pull came through the proxy');
    mark = relay.bytesDown;
    const srv = await serveJson(['--plain-http', '--proxy', proxy, ref, '--socket', path.join(home, 's.sock')]);
    try {
      const run = promisify(execFile);
      const remote = await run('nbdcopy', [srv.ready.exports[0]!.uri, '-'], { encoding: 'buffer', maxBuffer: 256 << 20 });
      const exp = await obd(['export', ...layers, path.join(home, 'local.raw')]);
      assert.equal(exp.code, 0, exp.stderr);
      assert.ok(remote.stdout.equals(await readFile(path.join(home, 'local.raw'))), 'the lazily read disk is the local one');
    } finally {
      assert.equal(await srv.stop(), 0);
    }
    assert.ok(relay.bytesDown - mark > 0, 'lazy reads came through the proxy');
  });

  test('without --proxy, ALL_PROXY sends obd through the proxy and NO_PROXY exempts the registry', async () => {
    const ref = `localhost:${reg.port}/px/app:v1`;
    const clean = { HTTPS_PROXY: '', https_proxy: '', HTTP_PROXY: '', http_proxy: '', all_proxy: '', no_proxy: '' };
    let mark = relay.connections;
    const via = await obd(['inspect', '--json', '--plain-http', ref], { env: { ...clean, ALL_PROXY: `socks5h://${cred}@${relay.host}`, NO_PROXY: '' } });
    assert.equal(via.code, 0, via.stderr);
    assert.ok(relay.connections > mark, 'ALL_PROXY was used');
    mark = relay.connections;
    const around = await obd(['inspect', '--json', '--plain-http', ref], { env: { ...clean, ALL_PROXY: `socks5h://${cred}@${relay.host}`, NO_PROXY: 'example.com,localhost' } });
    assert.equal(around.code, 0, around.stderr);
    assert.equal(relay.connections, mark, 'NO_PROXY exempted the registry');
    assert.equal(JSON.parse(around.stdout).digest, JSON.parse(via.stdout).digest);
  });

  test('an unsupported proxy scheme, from --proxy or the environment, is a clear error (exit 1)', async () => {
    const ref = `127.0.0.1:${reg.port}/px/app:v1`;
    const r = await obd(['inspect', '--plain-http', '--proxy', 'socks4://127.0.0.1:1080', ref]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^obd: --proxy: proxy scheme "socks4" is not one this client speaks \(http, https, socks5, socks5h\)/m);
    const j = await obd(['inspect', '--json', '--plain-http', ref], { env: { HTTPS_PROXY: '', https_proxy: '', all_proxy: '', ALL_PROXY: '', HTTP_PROXY: 'gopher://127.0.0.1:70' } });
    assert.equal(j.code, 1);
    assert.deepEqual({ code: JSON.parse(j.stdout).error.code, type: JSON.parse(j.stdout).error.type }, { code: 'EINVAL', type: 'UnsupportedProxyError' });
  });
});
