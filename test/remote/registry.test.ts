/**
 * The registry client against the real Debian docker-registry: htpasswd Basic auth and
 * Bearer tokens from the test token server.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CredentialStore } from '../../src/remote/auth.ts';
import { AuthError, NetworkError, RemoteNotFoundError } from '../../src/remote/errors.ts';
import { resolveImage } from '../../src/remote/image.ts';
import { encodeJson, MediaType } from '../../src/remote/manifest.ts';
import { RegistryClient } from '../../src/remote/registry.ts';
import { MemorySource } from '../../src/io/memory.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { startTokenServer, type TokenServer } from './helpers/token-server.ts';
import { blob } from './helpers/blobs.ts';
import { suiteTempDir, tempDir } from '../helpers/temp.ts';

const fast = { retryBaseMs: 10, dockerConfig: false as const };

describe('htpasswd (Basic) registry', () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startRegistry({ users: { alice: 's3cret' } });
  });
  after(() => reg.stop());

  const creds = () => {
    const c = new CredentialStore();
    c.add(`http://${reg.host}`, { username: 'alice', password: 's3cret' });
    return c;
  };

  test('anonymous and wrong-password requests fail with AuthError', async () => {
    const anon = new RegistryClient(reg.host, fast);
    await assert.rejects(anon.repository('a/b').statBlob(blob('x', 10).digest), (e: Error) => e instanceof AuthError && /Basic credentials/.test(e.message));
    const bad = new CredentialStore();
    bad.add(reg.host, { username: 'alice', password: 'nope' });
    const wrong = new RegistryClient(reg.host, { ...fast, credentials: bad });
    await assert.rejects(wrong.repository('a/b').ping(), (e: Error) => e instanceof AuthError && /refused/.test(e.message));
    await anon.close();
    await wrong.close();
  });

  test('credentials from a cred.json file: first matching key in file order wins', async (t) => {
    const dir = await tempDir(t);
    const file = path.join(dir, 'cred.json');
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    await writeFile(file, JSON.stringify({ auths: { [`${reg.host}/team`]: { auth: b64('alice:s3cret') }, [reg.host]: { username: 'alice', password: 'wrong' } } }));
    const store = await CredentialStore.load({ credsFile: file, dockerConfig: false });
    assert.equal(store.find(reg.host, 'team/app')?.password, 's3cret');
    assert.equal(store.find(reg.host, 'other/app')?.password, 'wrong');
    const c = new RegistryClient(reg.host, { ...fast, credentials: store });
    await c.repository('team/app').ping();
    await c.close();
  });

  test('blobs: monolithic and chunked upload, skip existing, HEAD, Range reads, stream, 404', async () => {
    const c = new RegistryClient(reg.host, { ...fast, credentials: creds(), chunkSize: 256 * 1024 });
    const repo = c.repository('team/blobs');
    const small = blob('small', 100_000);
    const big = blob('big', 1_000_003);
    assert.equal(await repo.putBlob(small.digest, small.source()), 'uploaded');
    let progress = 0;
    assert.equal(await repo.putBlob(big.digest, big.source(), { onProgress: (n) => (progress = n) }), 'uploaded');
    assert.equal(progress, big.bytes.length);
    assert.equal(await repo.putBlob(big.digest, big.source()), 'exists');
    assert.equal(await repo.statBlob(big.digest), big.bytes.length);
    assert.equal(await repo.statBlob(blob('absent', 1).digest), undefined);
    const src = await repo.openBlob(big.digest);
    for (const [off, len] of [[0, 1], [4095, 4097], [999_000, 5000], [1_000_002, 1]] as const) {
      const buf = new Uint8Array(len);
      const n = await src.read(buf, off);
      assert.equal(n, Math.min(len, big.bytes.length - off));
      assert.deepEqual(buf.subarray(0, n), new Uint8Array(big.bytes.subarray(off, off + n)));
    }
    assert.equal(await src.read(new Uint8Array(10), big.bytes.length), 0);
    const parts: Buffer[] = [];
    for await (const ch of repo.streamBlob(big.digest, 12345)) parts.push(Buffer.from(ch));
    assert.ok(Buffer.concat(parts).equals(big.bytes.subarray(12345)));
    await assert.rejects(repo.openBlob(blob('absent', 1).digest), RemoteNotFoundError);
    await assert.rejects(repo.getManifest('no-such-tag'), RemoteNotFoundError);
    await c.close();
  });

  test('cross-repository mount instead of upload', async () => {
    const c = new RegistryClient(reg.host, { ...fast, credentials: creds() });
    const b = blob('mount-me', 70_000);
    assert.equal(await c.repository('src/app').putBlob(b.digest, b.source()), 'uploaded');
    assert.equal(await c.repository('dst/app').putBlob(b.digest, b.source(), { mountFrom: ['src/app'] }), 'mounted');
    assert.equal(await c.repository('dst/app').statBlob(b.digest), b.bytes.length);
    const other = blob('not-there', 5000);
    assert.equal(await c.repository('dst2/app').putBlob(other.digest, other.source(), { mountFrom: ['src/app'] }), 'uploaded');
    await c.close();
  });

  test('manifests by tag and digest; an index resolves to the platform', async () => {
    const c = new RegistryClient(reg.host, { ...fast, credentials: creds() });
    const repo = c.repository('team/multi');
    const cfg = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const cfgD = (await import('../../src/remote/manifest.ts')).sha256Digest(cfg);
    await repo.putBlob(cfgD, new MemorySource(cfg));
    const layerA = blob('amd', 1000);
    const layerB = blob('arm', 1000);
    await repo.putBlob(layerA.digest, layerA.source());
    await repo.putBlob(layerB.digest, layerB.source());
    const man = (l: typeof layerA) => encodeJson({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: cfgD, size: cfg.length }, layers: [{ mediaType: MediaType.ociLayer, digest: l.digest, size: 1000 }] });
    const mA = man(layerA);
    const mB = man(layerB);
    const dA = await repo.putManifest(mA, MediaType.ociManifest);
    const dB = await repo.putManifest(mB, MediaType.ociManifest);
    const index = encodeJson({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [
        { mediaType: MediaType.ociManifest, digest: dB, size: mB.length, platform: { os: 'linux', architecture: 'arm64' } },
        { mediaType: MediaType.ociManifest, digest: dA, size: mA.length, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    });
    await repo.putManifest(index, MediaType.ociIndex, 'v1');
    const got = await repo.getManifest('v1');
    assert.equal(got.mediaType, MediaType.ociIndex);
    const amd = await resolveImage(repo, 'v1', { os: 'linux', architecture: 'amd64' });
    assert.equal(amd.digest, dA);
    assert.equal(amd.manifest.layers[0]!.digest, layerA.digest);
    const arm = await resolveImage(repo, 'v1', { os: 'linux', architecture: 'arm64' });
    assert.equal(arm.manifest.layers[0]!.digest, layerB.digest);
    await assert.rejects(resolveImage(repo, 'v1', { os: 'linux', architecture: 's390x' }), /no manifest for linux\/s390x/);
    assert.equal((await repo.getManifest(dA)).digest, dA);
    await c.close();
  });
});

describe('token (Bearer) registry', () => {
  let tokens: TokenServer;
  let reg: RunningRegistry;
  before(async () => {
    tokens = await startTokenServer({
      users: { alice: 'pw-a', bob: 'pw-b' },
      anonymous: true,
      grant: (user, asked) => {
        if (user === 'alice') return asked.actions;
        if (user === 'bob') return asked.actions.filter((a) => a === 'pull');
        return asked.name.startsWith('public/') ? asked.actions.filter((a) => a === 'pull') : [];
      },
    });
    reg = await startRegistry({ token: tokens });
  });
  after(async () => {
    await reg.stop();
    await tokens.stop();
  });

  const as = (user?: string) => {
    const c = new CredentialStore();
    if (user) c.add(reg.host, { username: user, password: user === 'alice' ? 'pw-a' : 'pw-b' });
    return new RegistryClient(reg.host, { ...fast, credentials: c });
  };

  test('push and read with tokens; one token request per scope while it is fresh', async () => {
    const alice = as('alice');
    const repo = alice.repository('team/tok');
    const b = blob('tok', 300_000);
    const before = tokens.requests.length;
    assert.equal(await repo.putBlob(b.digest, b.source()), 'uploaded');
    const src = await repo.openBlob(b.digest);
    const buf = new Uint8Array(4096);
    for (let i = 0; i < 20; i++) {
      await src.read(buf, i * 10_000);
      assert.ok(Buffer.from(buf).equals(b.bytes.subarray(i * 10_000, i * 10_000 + 4096)));
    }
    const asked = tokens.requests.slice(before).map((r) => r.scopes.join(' '));
    assert.ok(asked.length <= 3, `token requests: ${asked.join(' | ')}`);
    await alice.close();
  });

  test('scopes are enforced: pull-only user cannot push; anonymous only reads public/', async () => {
    const b = blob('scoped', 5000);
    const alice = as('alice');
    await alice.repository('public/x').putBlob(b.digest, b.source());
    await alice.repository('team/x').putBlob(b.digest, b.source());
    await alice.close();
    const bob = as('bob');
    assert.equal(await bob.repository('team/x').statBlob(b.digest), 5000);
    await assert.rejects(bob.repository('team/y').putBlob(b.digest, b.source()), AuthError);
    await bob.close();
    const anon = as();
    assert.equal(await anon.repository('public/x').statBlob(b.digest), 5000);
    await assert.rejects(anon.repository('team/x').statBlob(b.digest), AuthError);
    await anon.close();
  });

  test('a failing token endpoint is retried', async () => {
    const alice = as('alice');
    tokens.failNext(2);
    await alice.repository('team/retry').ping();
    await alice.close();
  });

  test('cross-repository mount asks for both scopes', async () => {
    const alice = as('alice');
    const b = blob('tok-mount', 20_000);
    await alice.repository('team/one').putBlob(b.digest, b.source());
    assert.equal(await alice.repository('team/two').putBlob(b.digest, b.source(), { mountFrom: ['team/one'] }), 'mounted');
    assert.ok(tokens.requests.some((r) => r.scopes.some((s) => s.includes('repository:team/one:pull')) && r.scopes.some((s) => s.includes('team/two'))));
    await alice.close();
  });
});

describe('TLS registry', () => {
  let reg: RunningRegistry;
  let dir: string;
  const tmp = suiteTempDir('obd-tls-');
  before(async () => {
    dir = tmp.path;
    const certPath = path.join(dir, 'cert.pem');
    const keyPath = path.join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    reg = await startRegistry({ tls: { certPath, keyPath } });
  });
  after(async () => {
    await reg.stop();
  });

  test('a self-signed certificate is refused unless --insecure; --insecure speaks TLS on loopback', async () => {
    const strict = new RegistryClient(reg.host, { ...fast, plainHttp: false, retries: 0 });
    await assert.rejects(strict.repository('tls/app').ping(), (e: Error) => e instanceof NetworkError && /certificate/i.test(e.message));
    await strict.close();
    const insecure = new RegistryClient(reg.host, { ...fast, insecure: true });
    assert.equal(insecure.base.protocol, 'https:');
    const b = blob('tls', 50_000);
    assert.equal(await insecure.repository('tls/app').putBlob(b.digest, b.source()), 'uploaded');
    const src = await insecure.repository('tls/app').openBlob(b.digest);
    const buf = Buffer.alloc(1000);
    await src.read(buf, 49_000);
    assert.ok(buf.equals(b.bytes.subarray(49_000)));
    await insecure.close();
  });
});
