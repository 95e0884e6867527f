/**
 * A registry that lies, through the real CLI: `obd serve` of an image on it answers EIO for
 * exactly the reads the lies touch, within the timeout, while other requests on the same and
 * other connections get their right bytes; it stays up, its memory stays bounded, and once
 * the registry behaves the failed ranges read right (nothing wrong was cached). `obd inspect`
 * and `obd pull` end in one clear line and exit 1.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { openImage } from '../../src/image/open.ts';
import { MediaType } from '../../src/remote/manifest.ts';
import { FIXTURES } from '../helpers/recipes.ts';
import { obd, serveJson, type ServeHandle } from '../helpers/cli.ts';
import { assemble, CMD, ERR, RawClient, type Result } from '../nbd/helpers/client.ts';
import { startHostileRegistry, type Hostility, type HostileRegistry } from './helpers/hostile-registry.ts';
import { suiteTempDir, tempDir } from '../helpers/temp.ts';

const LAYER = path.join(FIXTURES, 'lsmt', 'layer1.lsmt');
const K = 1024;
const UNIT = 256 * K;
/** Device ranges of layer1.lsmt (see its .index.tsv) and the blob bytes they live in. */
const HEALTHY_CACHED = { offset: 0, length: 64 * K }; // blob unit 0, read while opening
const HEALTHY_FETCHED = { offset: 10 * 1024 * K, length: 16 * K }; // blob unit 4
const HOSTILE = { offset: 4 * 1024 * K + 200 * K, length: 64 * K }; // blob unit 1
const HOSTILE_UNITS = { from: UNIT, to: 4 * UNIT };

/** Sends all reads at once, then collects their replies (data assembled from structured chunks). */
async function readMany(c: RawClient, ranges: Array<{ offset: number; length: number }>): Promise<Result[]> {
  const cookies = ranges.map((r) => c.request(CMD.READ, r.offset, r.length));
  const got = await c.collect(cookies);
  return ranges.map((r, i) => {
    const res = got.get(cookies[i]!)!;
    if (c.structured && res.error === 0) res.data = assemble(res.chunks, r.offset, r.length);
    return res;
  });
}

async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

describe('obd serve over a hostile registry', { timeout: 60_000 }, () => {
  let h: HostileRegistry;
  let server: ServeHandle;
  let expected: (r: { offset: number; length: number }) => Buffer;
  let sock: string;
  let dir: string;
  const tmp = suiteTempDir('obd-hostile-');
  before(async () => {
    const dev = await openImage([LAYER]);
    const all = Buffer.alloc(dev.size);
    await dev.read(all, 0);
    await dev.close();
    expected = (r) => all.subarray(r.offset, r.offset + r.length);
    h = await startHostileRegistry();
    h.putImage('lies/disk', 'v1', [await readFile(LAYER)]);
    dir = tmp.path;
    sock = path.join(dir, 'nbd.sock');
    // A retry, so a healthy fetch survives a loaded machine's hiccup; lies still fail within a second.
    server = await serveJson([`${h.host}/lies/disk:v1`, '--socket', sock, '--timeout', '200', '--retries', '1']);
  });
  after(async () => {
    await server?.stop();
    await h?.stop();
  });

  const kinds: Hostility[] = [
    { kind: 'wrong-range' },
    { kind: 'wrong-length', delta: 100 },
    { kind: 'endless' },
    { kind: 'trickle', everyMs: 10 },
    { kind: 'trickle-headers', everyMs: 10 },
    { kind: 'silent' },
    { kind: 'redirect-loop' },
    { kind: 'respond', status: 200, body: 'not the range' },
  ];

  test('each lie fails only its own reads with EIO, on simple and structured connections alike', async () => {
    const simple = await RawClient.connect({ socket: sock });
    await simple.handshake();
    const structured = await RawClient.connect({ socket: sock });
    await structured.handshake({ structured: true });
    h.rule = (r) => (r.method === 'GET' && r.range && r.range.start >= HOSTILE_UNITS.from && r.range.start < HOSTILE_UNITS.to ? current : undefined);
    let current: Hostility | undefined;
    const rss0 = await rssKiB(server.pid);
    for (const k of kinds) {
      current = k;
      for (const c of [simple, structured]) {
        const mark = h.seen.length;
        const t0 = performance.now();
        // The failing read first, healthy ones queued right behind it on the same connection.
        const replies = readMany(c, [HOSTILE, HEALTHY_CACHED, HEALTHY_FETCHED]);
        const other = await RawClient.connect({ socket: sock });
        await other.handshake();
        const side = await other.read(HEALTHY_CACHED.offset, HEALTHY_CACHED.length);
        other.close();
        assert.equal(side.error, 0, `${k.kind}: another client was refused`);
        assert.ok(side.data!.equals(expected(HEALTHY_CACHED)), `${k.kind}: another client got wrong bytes`);
        const [r, g1, g2] = await replies;
        const took = performance.now() - t0;
        assert.ok(h.seen.slice(mark).some((x) => x.hostility === k.kind), `${k.kind}: the lie was told`);
        assert.equal(r!.error, ERR.EIO, `${k.kind}: the hostile read answered ${r!.error}, not EIO`);
        assert.ok(took < 5000, `${k.kind}: took ${took.toFixed(0)} ms`);
        assert.equal(g1!.error, 0);
        assert.ok(g1!.data!.equals(expected(HEALTHY_CACHED)), `${k.kind}: wrong bytes for a healthy read`);
        assert.equal(g2!.error, 0);
        assert.ok(g2!.data!.equals(expected(HEALTHY_FETCHED)), `${k.kind}: wrong bytes for a healthy read`);
      }
    }
    const grew = (await rssKiB(server.pid)) - rss0;
    assert.ok(grew < 64 * 1024, `obd serve RSS grew by ${grew} KiB`);
    h.rule = () => undefined;
    for (const c of [simple, structured]) {
      const r = await c.read(HOSTILE.offset, HOSTILE.length);
      assert.equal(r.error, 0);
      assert.ok(r.data!.equals(expected(HOSTILE)), 'the failed range reads right once the registry behaves');
      c.close();
    }
    assert.doesNotMatch(server.stderr(), /Unhandled|TypeError|RangeError|at .*\.ts:\d+/);
  });

  test('the server exits cleanly after all that', async () => {
    assert.equal(await server.stop(), 0);
  });
});

describe('obd inspect / pull / serve against a hostile registry', { timeout: 60_000 }, () => {
  let h: HostileRegistry;
  before(async () => {
    h = await startHostileRegistry();
    h.putImage('lies/img', 'v1', [Buffer.alloc(8192, 7)]);
    const bad = { schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: 'sha256:' + 'a'.repeat(64), size: 2 }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: 'sha256:' + 'b'.repeat(64), size: -4096 }] };
    h.putManifest('lies/img', JSON.stringify(bad), MediaType.ociManifest, 'negative');
  });
  after(() => h.stop());

  test('a negative layer size: exit 1 naming the field', async () => {
    const r = await obd(['inspect', `${h.host}/lies/img:negative`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^obd: .*lies\/img sha256:[0-9a-f]{64}: layers\[0\]\.size -4096 is not a byte count/m);
  });

  test('an endless manifest: exit 1 at the cap', async () => {
    h.rule = (r) => (r.path.includes('/manifests/') ? { kind: 'endless' } : undefined);
    const r = await obd(['inspect', '--timeout', '200', '--retries', '0', `${h.host}/lies/img:v1`]);
    h.rule = () => undefined;
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^obd: .*response larger than 4194304 bytes/m);
  });

  test('a lie while serve opens the image: exit 1 with the reason, not a hang', async (t) => {
    const dir = await tempDir(t);
    h.rule = (r) => (r.path.includes('/blobs/') && r.method === 'GET' ? { kind: 'endless' } : undefined);
    const r = await obd(['serve', '--timeout', '200', '--retries', '0', '--socket', path.join(dir, 's.sock'), `${h.host}/lies/img:v1`]);
    h.rule = () => undefined;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^obd: .*body longer than the \d+ bytes announced/m);
  });

  test('a trickling blob: pull gives up with a timeout, a rerun succeeds', async (t) => {
    const dir = await tempDir(t);
    h.rule = (r) => (r.path.includes('/blobs/') && r.method === 'GET' ? { kind: 'trickle', everyMs: 20 } : undefined);
    const t0 = performance.now();
    const r = await obd(['pull', '--timeout', '200', '--retries', '1', `${h.host}/lies/img:v1`, dir]);
    h.rule = () => undefined;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^obd: .*body slower than 1024 bytes\/s over 200 ms/m);
    assert.ok(performance.now() - t0 < 10_000);
    const again = await obd(['pull', '--json', `${h.host}/lies/img:v1`, dir]);
    assert.equal(again.code, 0, again.stderr);
  });
});
