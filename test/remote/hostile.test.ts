/**
 * A registry that lies, through the library: every lie ends in a typed error within the
 * configured timeouts (200 ms here), bodies are cut at the byte cap or the range asked,
 * memory stays bounded, and the same client goes on reading the right bytes afterwards.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CredentialStore } from '../../src/remote/auth.ts';
import { AuthError, ManifestError, NetworkError, ProtocolError, RemoteError, TimeoutError } from '../../src/remote/errors.ts';
import { resolveImage } from '../../src/remote/image.ts';
import { FormatError } from '../../src/io/errors.ts';
import { MAX_LAYERS, MAX_MANIFEST_BYTES, MediaType, sha256Digest } from '../../src/remote/manifest.ts';
import { OciLayout } from '../../src/remote/oci-layout.ts';
import { pullImage } from '../../src/image/pull.ts';
import { MAX_REDIRECTS, RegistryClient, type RegistryOptions, type RegistryRepository } from '../../src/remote/registry.ts';
import { startHangingListener, startHostileRegistry, type Hostility, type HostileRegistry, type HostileRequest } from './helpers/hostile-registry.ts';
import { tempDir } from '../helpers/temp.ts';

const TIMEOUT = 200;
/** How long a refused request may take, with room for a loaded machine: far below any hang. */
const BUDGET = 15 * TIMEOUT;
const isBlobGet = (r: HostileRequest) => r.method === 'GET' && r.path.includes('/blobs/');
const isManifestGet = (r: HostileRequest) => r.method === 'GET' && r.path.includes('/manifests/');

/** Timeouts of 200 ms; two retries, so a healthy request survives a loaded machine's hiccup. */
function client(h: HostileRegistry, extra: RegistryOptions = {}): RegistryClient {
  return new RegistryClient(h.host, { credentials: new CredentialStore(), retries: 2, retryBaseMs: 5, idleTimeoutMs: TIMEOUT, ...extra });
}

/** Resolves with how long `p` took to reject, asserting the error. */
async function rejectsWithin(p: Promise<unknown>, check: (e: Error) => boolean, ms: number): Promise<number> {
  const t0 = performance.now();
  await assert.rejects(p, (e: Error) => {
    assert.ok(check(e), `unexpected ${e.name}: ${e.message}`);
    return true;
  });
  const took = performance.now() - t0;
  assert.ok(took < ms, `took ${took.toFixed(0)} ms, more than ${ms}`);
  return took;
}

/** Waits until the hostile answer to `r` has been cut off (its socket closed). */
async function cutOff(r: HostileRequest | undefined): Promise<number> {
  assert.ok(r, 'the hostile request was made');
  for (let i = 0; i < 1000 && r.bytesSent === undefined; i++) await new Promise((res) => setTimeout(res, 10));
  assert.notEqual(r.bytesSent, undefined, 'the client hung up on the hostile answer');
  return r.bytesSent!;
}

const fromRule = (h: HostileRegistry, pick: (r: HostileRequest) => boolean, hostility: Hostility) => {
  h.rule = (r) => (pick(r) ? hostility : undefined);
};

describe('a hostile registry: blob Range reads', { timeout: 60_000 }, () => {
  let h: HostileRegistry;
  const data = randomBytes(1 << 20);
  let digest: string;
  before(async () => {
    h = await startHostileRegistry();
    digest = h.putBlob(data);
  });
  after(() => h.stop());

  const cases: Array<{ hostility: Hostility; error: new (...a: never[]) => Error; message: RegExp }> = [
    { hostility: { kind: 'wrong-range' }, error: ProtocolError, message: /asked bytes 4096-69631\/1048576, got Content-Range "bytes 4097-69632\/1048576"/ },
    { hostility: { kind: 'wrong-length', delta: 100 }, error: ProtocolError, message: /Content-Length 65636 is not the 65536 bytes asked/ },
    { hostility: { kind: 'wrong-length', delta: -100 }, error: ProtocolError, message: /Content-Length 65436 is not the 65536 bytes asked/ },
    { hostility: { kind: 'wrong-length', delta: 2 ** 40 }, error: ProtocolError, message: /Content-Length 1099511693312 is not/ },
    { hostility: { kind: 'endless' }, error: ProtocolError, message: /body longer than the 65536 bytes announced/ },
    { hostility: { kind: 'trickle', everyMs: 10 }, error: TimeoutError, message: /body slower than 1024 bytes\/s over 200 ms/ },
    { hostility: { kind: 'trickle-headers', everyMs: 10 }, error: TimeoutError, message: /no response headers within 200 ms/ },
    { hostility: { kind: 'silent' }, error: TimeoutError, message: /no response headers within 200 ms|no data for 200 ms/ },
    { hostility: { kind: 'redirect-loop' }, error: ProtocolError, message: new RegExp(`more than ${MAX_REDIRECTS} redirects`) },
    { hostility: { kind: 'respond', status: 302, headers: { location: 'file:///etc/passwd' } }, error: ProtocolError, message: /redirect to a file: URL, which is not followed/ },
    { hostility: { kind: 'respond', status: 200, body: data.subarray(0, 65536) }, error: ProtocolError, message: /server ignored Range/ },
    { hostility: { kind: 'respond', status: 206, headers: { 'x-big': 'a'.repeat(40_000) } }, error: ProtocolError, message: /malformed HTTP response/ },
    { hostility: { kind: 'respond', status: 206, headers: { 'content-encoding': 'gzip', 'content-range': 'bytes 4096-69631/1048576' }, body: Buffer.alloc(65536) }, error: ProtocolError, message: /Content-Encoding "gzip" to a request for identity/ },
    { hostility: { kind: 'raw', bytes: 'SSH-2.0-OpenSSH_9.2\r\n' }, error: ProtocolError, message: /malformed HTTP response/ },
    { hostility: { kind: 'raw', bytes: 'HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n' }, error: ProtocolError, message: /a registry does not switch protocols/ },
    { hostility: { kind: 'raw', bytes: 'HTTP/1.1 100 Continue\r\n\r\n'.repeat(1000) }, error: NetworkError, message: /socket hang up/ },
    { hostility: { kind: 'raw', bytes: 'HTTP/1.1 206 Partial Content\r\ncontent-range: bytes 4096-69631/1048576\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n' }, error: ProtocolError, message: /malformed HTTP response/ },
  ];
  for (const c of cases) {
    const label = `${c.hostility.kind}${'delta' in c.hostility ? ` ${c.hostility.delta}` : ''}${c.hostility.kind === 'respond' ? ` ${c.hostility.status}${c.hostility.headers ? ' ' + Object.keys(c.hostility.headers).join() : ''}` : ''}${c.hostility.kind === 'raw' ? ` ${JSON.stringify(String(c.hostility.bytes).slice(0, 16))}` : ''}`;
    test(`${label}: a typed ${c.error.name} within the timeout, then the client reads right bytes again`, async () => {
      const c1 = client(h);
      const repo = c1.repository('lies/blob');
      const mark = h.seen.length;
      fromRule(h, isBlobGet, c.hostility);
      const buf = Buffer.alloc(65536);
      await rejectsWithin(repo.readRange(digest, buf, 4096, data.length), (e) => e instanceof c.error && c.message.test(e.message) && (e as RemoteError).url.includes(digest), 3 * BUDGET);
      const hostile = h.seen.slice(mark).filter((r) => r.hostility);
      assert.ok(hostile.length >= 1);
      if (c.hostility.kind === 'redirect-loop') assert.equal(hostile.length, MAX_REDIRECTS + 1, 'redirects are bounded');
      if (c.hostility.kind === 'endless') assert.ok((await cutOff(hostile[0])) < 32 << 20, 'the endless body was cut off');
      h.rule = () => undefined;
      await repo.readRange(digest, buf, 8192, data.length);
      assert.ok(buf.equals(data.subarray(8192, 8192 + 65536)));
      await c1.close();
    });
  }

  test('bytes past the announced length never reach the next request', async () => {
    const c1 = client(h);
    const repo = c1.repository('lies/blob');
    let first = true;
    h.rule = (r) => (isBlobGet(r) && first ? ((first = false), { kind: 'overlong-body' }) : undefined);
    const a = Buffer.alloc(4096);
    await repo.readRange(digest, a, 0, data.length);
    assert.ok(a.equals(data.subarray(0, 4096)));
    // Same byte count, so the forged answer would fit this request exactly if it were taken.
    const b = Buffer.alloc(4096);
    await repo.readRange(digest, b, 4096, data.length);
    assert.ok(b.equals(data.subarray(4096, 8192)), 'the forged second answer was not taken');
    h.rule = () => undefined;
    await c1.close();
  });

  test('a connect that hangs times out', async () => {
    const hang = await startHangingListener();
    try {
      const c1 = new RegistryClient(hang.host, { credentials: new CredentialStore(), retries: 0, idleTimeoutMs: 1000, connectTimeoutMs: TIMEOUT });
      await rejectsWithin(c1.repository('lies/blob').readRange(digest, Buffer.alloc(10), 0, data.length), (e) => e instanceof TimeoutError && /not connected within 200 ms/.test(e.message), BUDGET);
      await c1.close();
    } finally {
      await hang.stop();
    }
  });

  test('timeouts are retried with the configured count, then give up', async () => {
    const c1 = client(h, { retries: 2 });
    const mark = h.seen.length;
    fromRule(h, isBlobGet, { kind: 'trickle', everyMs: 10 });
    await rejectsWithin(c1.repository('lies/blob').readRange(digest, Buffer.alloc(4096), 0, data.length), (e) => e instanceof TimeoutError, 3 * BUDGET);
    assert.equal(h.seen.slice(mark).filter((r) => r.hostility === 'trickle').length, 3);
    h.rule = () => undefined;
    await c1.close();
  });

  test('a slow reader is not mistaken for a slow server', async () => {
    const c1 = client(h);
    const stream = c1.repository('lies/blob').streamBlob(digest);
    let got = 0;
    for await (const chunk of stream) {
      if (got === 0) await new Promise((r) => setTimeout(r, 3 * TIMEOUT));
      got += chunk.length;
    }
    assert.equal(got, data.length);
    await c1.close();
  });

  test('a server that falls silent after a slow reader caught up still times out', async () => {
    const c1 = client(h, { retries: 0, minBytesPerSec: 0 });
    fromRule(h, isBlobGet, { kind: 'stall-after', bytes: 256 * 1024 });
    const read = (async () => {
      let got = 0;
      for await (const chunk of c1.repository('lies/blob').streamBlob(digest)) {
        if (got === 0) await new Promise((r) => setTimeout(r, 3 * TIMEOUT));
        got += chunk.length;
      }
    })();
    await rejectsWithin(read, (e) => e instanceof TimeoutError && /no data for 200 ms/.test(e.message), 3 * TIMEOUT + BUDGET);
    h.rule = () => undefined;
    await c1.close();
  });
});

describe('a hostile registry: manifests', { timeout: 60_000 }, () => {
  let h: HostileRegistry;
  let c: RegistryClient;
  let repo: RegistryRepository;
  const layer = randomBytes(4096);
  let good: { layer: string; config: string };
  before(async () => {
    h = await startHostileRegistry();
    c = client(h);
    repo = c.repository('lies/manifest');
    const img = h.putImage('lies/manifest', 'good', [layer]);
    const m = JSON.parse((await repo.getManifest(img.digest)).bytes.toString());
    good = { layer: img.layers[0]!, config: m.config.digest };
  });
  after(async () => {
    await c.close();
    await h.stop();
  });

  const desc = (over: Record<string, unknown> = {}) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: good.layer, size: 4096, ...over });
  const manifest = (over: Record<string, unknown>) => JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: good.config, size: 10 }, layers: [desc()], ...over });

  /** Tags `body` and resolves it as an image; resolves with the error. */
  async function resolveBody(tag: string, body: string, type: string = MediaType.ociManifest): Promise<Error> {
    h.putManifest('lies/manifest', body, type, tag);
    return resolveImage(repo, tag).then(
      () => assert.fail(`${tag} resolved`),
      (e: Error) => e,
    );
  }

  const fields: Array<[string, () => Record<string, unknown>, string, RegExp]> = [
    ['negative size', () => ({ layers: [desc(), desc({ size: -1 })] }), 'layers[1].size', /-1 is not a byte count/],
    ['fractional size', () => ({ layers: [desc({ size: 1.5 })] }), 'layers[0].size', /1\.5 is not a byte count/],
    ['size 2^53', () => ({ layers: [desc({ size: 2 ** 53 })] }), 'layers[0].size', /9007199254740992 is not a byte count/],
    ['size as text', () => ({ layers: [desc({ size: '4096' })] }), 'layers[0].size', /"4096" is not a byte count/],
    ['negative config size', () => ({ config: { mediaType: MediaType.ociConfig, digest: good.config, size: -5 } }), 'config.size', /-5 is not/],
    ['bad digest', () => ({ layers: [desc({ digest: 'sha256:xyz' })] }), 'layers[0].digest', /"sha256:xyz" is not a digest/],
    ['not a media type', () => ({ layers: [desc({ mediaType: 'text html' })] }), 'layers[0].mediaType', /"text html" is not a media type/],
    ['a config media type declared by a manifest', () => ({ mediaType: MediaType.ociConfig }), 'mediaType', /is not an image manifest media type/],
    ['annotations that are not strings', () => ({ annotations: { a: 1 } }), 'annotations["a"]', /1, not a string/],
    ['layers that are not a list', () => ({ layers: { 0: desc() } }), 'layers', /is an object, not a list/],
    ['schema 1', () => ({ schemaVersion: 1 }), 'schemaVersion', /is 1, not 2/],
  ];
  for (const [what, over, field, message] of fields) {
    test(`${what}: ManifestError naming ${field}`, async () => {
      const e = await resolveBody(what.replace(/\W+/g, '-'), manifest(over()));
      assert.ok(e instanceof ManifestError, `${e.name}: ${e.message}`);
      assert.equal(e.field, field);
      assert.match(e.message, message);
      assert.match(e.message, /lies\/manifest sha256:[0-9a-f]{64}/, 'names the manifest');
    });
  }

  test('millions of layers: refused by count, memory bounded', async () => {
    const n = Math.floor((MAX_MANIFEST_BYTES - 300) / 2);
    const rss0 = process.memoryUsage().rss;
    const e = await resolveBody('millions', manifest({ layers: '[' + '0,'.repeat(n - 1) + '0]' }).replace('"[', '[').replace(']"', ']'));
    assert.ok(e instanceof ManifestError && e.field === 'layers', e.message);
    assert.match(e.message, new RegExp(`has ${n} entries, more than the ${MAX_LAYERS} allowed`));
    assert.ok(process.memoryUsage().rss - rss0 < 256 << 20, 'memory stays bounded');
  });

  test('nesting 200,000 deep is refused without a stack overflow', async () => {
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    let e = await resolveBody('deep-layers', `{"schemaVersion":2,"config":${JSON.stringify({ mediaType: MediaType.ociConfig, digest: good.config, size: 10 })},"layers":${deep}}`);
    assert.ok(e instanceof ManifestError && e.field === 'layers[0]', `${e.name}: ${e.message}`);
    e = await resolveBody('deep-annotation', manifest({ layers: [desc({ annotations: { x: 'PLACEHOLDER' } })] }).replace('"PLACEHOLDER"', deep));
    assert.ok(e instanceof ManifestError && e.field === 'layers[0].annotations["x"]', `${e.name}: ${e.message}`);
  });

  test('wrong media types: HTML for a manifest, a manifest posing as an index', async () => {
    let e = await resolveBody('html', '<html><body>login</body></html>', 'text/html');
    assert.ok(e instanceof ManifestError && e.field === '(document)' && /not JSON/.test(e.message), e.message);
    e = await resolveBody('posing', manifest({ mediaType: MediaType.ociIndex }), MediaType.ociIndex);
    assert.ok(e instanceof ManifestError && e.field === 'manifests', e.message);
    e = await resolveBody('index-of-junk', JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [{ ...desc(), platform: 'linux' }] }), MediaType.ociIndex);
    assert.ok(e instanceof ManifestError && e.field === 'manifests[0].platform', e.message);
    const many = Array.from({ length: 5000 }, () => desc());
    e = await resolveBody('huge-index', JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: many }), MediaType.ociIndex);
    assert.ok(e instanceof ManifestError && e.field === 'manifests' && /5000 entries/.test(e.message), e.message);
  });

  test('an endless manifest is cut at the cap; a huge announced one is refused unread', async () => {
    const rss0 = process.memoryUsage().rss;
    const mark = h.seen.length;
    fromRule(h, isManifestGet, { kind: 'endless' });
    for (let i = 0; i < 4; i++) await rejectsWithin(repo.getManifest('good'), (e) => e instanceof ProtocolError && /response larger than 4194304 bytes/.test(e.message), 3 * BUDGET);
    for (const r of h.seen.slice(mark)) assert.ok((await cutOff(r)) < MAX_MANIFEST_BYTES + (32 << 20), 'cut off');
    assert.ok(process.memoryUsage().rss - rss0 < 128 << 20, `RSS grew by ${((process.memoryUsage().rss - rss0) / 2 ** 20).toFixed(0)} MiB`);
    fromRule(h, isManifestGet, { kind: 'wrong-length', delta: 2 ** 40 });
    await rejectsWithin(repo.getManifest('good'), (e) => e instanceof ProtocolError && /announces 1099511628\d+ bytes, more than the 4194304 allowed/.test(e.message), BUDGET);
    h.rule = () => undefined;
    assert.equal((await resolveImage(repo, 'good')).manifest.layers.length, 1, 'the client still works');
  });

  test('pull: an endless blob is refused at its size and no blob takes its final name', async (t) => {
    const dir = await tempDir(t);
    const mark = h.seen.length;
    fromRule(h, isBlobGet, { kind: 'endless' });
    await rejectsWithin(
      pullImage(`${h.host}/lies/manifest:good`, dir, { credentials: new CredentialStore(), retries: 0, idleTimeoutMs: TIMEOUT }),
      (e) => e instanceof ProtocolError && /is longer than its \d+ bytes/.test(e.message),
      BUDGET,
    );
    for (const r of h.seen.slice(mark).filter((x) => x.hostility)) assert.ok((await cutOff(r)) < 32 << 20);
    const names: string[] = await readdir(path.join(dir, 'blobs', 'sha256')).catch(() => []);
    assert.ok(!names.includes(good.layer.slice(7)), `a bad blob took its final name: ${names.join(', ')}`);
    h.rule = () => undefined;
  });
});

describe('a hostile token endpoint', { timeout: 60_000 }, () => {
  let h: HostileRegistry;
  before(async () => {
    h = await startHostileRegistry({ bearer: true });
    h.putImage('lies/auth', 'v1', [randomBytes(1000)]);
  });
  after(() => h.stop());

  const isToken = (r: HostileRequest) => r.path === '/token';
  const cases: Array<[string, Hostility, (e: Error) => boolean]> = [
    ['endless', { kind: 'endless' }, (e) => e instanceof ProtocolError && /larger than 1048576/.test(e.message)],
    ['trickle', { kind: 'trickle', everyMs: 10 }, (e) => e instanceof TimeoutError],
    ['silent', { kind: 'silent' }, (e) => e instanceof TimeoutError],
    ['not JSON', { kind: 'respond', status: 200, body: 'OK' }, (e) => e instanceof ProtocolError && /not JSON/.test(e.message)],
    ['JSON null', { kind: 'respond', status: 200, body: 'null' }, (e) => e instanceof ProtocolError && /neither "token"/.test(e.message)],
    ['a token that would split the header', { kind: 'respond', status: 200, body: JSON.stringify({ token: 'a\r\nx-evil: 1' }) }, (e) => e instanceof ProtocolError && /visible ASCII/.test(e.message)],
    ['a token that is an object', { kind: 'respond', status: 200, body: JSON.stringify({ token: { a: 1 } }) }, (e) => e instanceof ProtocolError && /visible ASCII/.test(e.message)],
    ['a redirect loop', { kind: 'redirect-loop' }, (e) => e instanceof AuthError && /answered 302/.test(e.message)],
  ];
  for (const [what, hostility, check] of cases) {
    test(`${what}: a typed error, then a good token works`, async () => {
      const c = client(h);
      fromRule(h, isToken, hostility);
      await rejectsWithin(c.repository('lies/auth').getManifest('v1'), check, 3 * BUDGET);
      h.rule = () => undefined;
      assert.ok((await c.repository('lies/auth').getManifest('v1')).bytes.length > 0);
      await c.close();
    });
  }

  test('a realm that is not http(s), and a registry that refuses every token', async () => {
    const c = client(h);
    h.rule = (r) => (r.path.startsWith('/v2') ? { kind: 'respond', status: 401, headers: { 'www-authenticate': 'Bearer realm="file:///etc/passwd"' } } : undefined);
    await rejectsWithin(c.repository('lies/auth').getManifest('v1'), (e) => e instanceof AuthError && /not an http\(s\) URL/.test(e.message), BUDGET);
    const mark = h.seen.length;
    h.rule = (r) => (r.path.startsWith('/v2') ? { kind: 'respond', status: 401, headers: { 'www-authenticate': `Bearer realm="http://${h.host}/token"` } } : undefined);
    await rejectsWithin(c.repository('lies/auth').getManifest('v1'), (e) => e instanceof AuthError && /still unauthorized/.test(e.message), BUDGET);
    assert.ok(h.seen.length - mark <= 6, 'auth rounds are bounded');
    h.rule = () => undefined;
    await c.close();
  });
});

describe('a hostile OCI layout', { timeout: 60_000 }, () => {
  test('oversized or non-file index.json and manifests, and bad descriptors, are refused by name', async (t) => {
    const dir = await tempDir(t);
    const layout = await OciLayout.open(dir, { create: true });
    const index = path.join(dir, 'index.json');
    await writeFile(index, Buffer.alloc(MAX_MANIFEST_BYTES + 1, 0x20));
    await assert.rejects(layout.tags(), (e: Error) => e instanceof FormatError && /index\.json: 4194305 bytes, more than the 4194304/.test(e.message));
    await rm(index);
    await symlink('/dev/zero', index);
    await assert.rejects(layout.tags(), (e: Error) => e instanceof FormatError && /not a regular file/.test(e.message));
    await rm(index);
    const big = Buffer.alloc(MAX_MANIFEST_BYTES + 1, 0x20);
    const digest = sha256Digest(big);
    await writeFile(layout.blobPath(digest), big);
    await assert.rejects(layout.getManifest(digest), (e: Error) => e instanceof FormatError && /more than the 4194304/.test(e.message));
    await writeFile(index, JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaType.ociManifest, digest, size: -1 }] }));
    await assert.rejects(layout.tags(), (e: Error) => e instanceof ManifestError && e.field === 'manifests[0].size');
  });
});
