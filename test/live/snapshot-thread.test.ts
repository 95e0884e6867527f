/**
 * A snapshot's commit and push run on the snapshot thread (src/live/background.ts), which
 * opens the sealed upper and its own registry client: the result must be the layer and the
 * image an offline commit and push of the same data make, the upload must get through a
 * registry that drops connections, and a server stopped mid-snapshot must cancel the work,
 * leaving nothing half-made here or in the registry.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { controlRequest } from '../../src/live/client.ts';
import { obd } from '../helpers/cli.ts';
import { tempDir } from '../helpers/temp.ts';
import { startFaultProxy } from '../remote/helpers/fault-proxy.ts';
import { startRegistry } from '../remote/helpers/registry.ts';
import { baseLayer, connect, mustFlush, mustRead, mustWrite, pattern, readImage, serveLive } from './helpers.ts';

/** The manifest digest a registry answers for `ref` (host/repo:tag), or its HTTP status when it has none. */
async function manifestDigest(host: string, repoTag: string): Promise<string | number> {
  const [repo, tag] = repoTag.split(':');
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  await res.arrayBuffer();
  return res.status === 200 ? res.headers.get('docker-content-digest')! : res.status;
}

describe('snapshot thread', { timeout: 120_000 }, () => {
  it('commits and pushes the same layer bytes and manifest as obd commit + obd push of the same upper', async (t) => {
    const dir = await tempDir(t, 'obd-live-same-');
    const reg = await startRegistry();
    t.after(() => reg.stop());
    const { layer } = await baseLayer(dir);
    const live = await serveLive(dir, [layer]);
    let r: { commit: { file: string }; push: { digest: string; layersUploaded: number } };
    try {
      const c = await connect(live.socket);
      await mustWrite(c, 0, pattern('same-a', 1 << 20));
      await mustWrite(c, 5 << 20, pattern('same-b', 64 << 10));
      await mustFlush(c);
      const s = await obd(['snapshot', '--control', live.control, '--push', `${reg.host}/disks/same:live`, '--json']);
      assert.equal(s.code, 0, s.stderr + s.stdout);
      r = JSON.parse(s.stdout);
      c.disconnect();
    } finally {
      assert.equal(await live.serve.stop(), 0, live.serve.stderr());
    }
    // The sealed upper (the one the server started with, so kept after its commit) committed offline.
    const offline = path.join(dir, 'offline.tar');
    const cm = await obd(['commit', path.join(dir, 'rw.data'), path.join(dir, 'rw.index'), offline, '--keep-uuid', '-z', 'lz4', '-t']);
    assert.equal(cm.code, 0, cm.stderr);
    assert.ok((await readFile(offline)).equals(await readFile(r.commit.file)), 'the layer committed on the snapshot thread is byte for byte the offline commit');
    const p = await obd(['push', layer, offline, `${reg.host}/disks/same:offline`]);
    assert.equal(p.code, 0, p.stderr);
    assert.equal(await manifestDigest(reg.host, 'disks/same:offline'), r.push.digest, 'the same manifest');
    assert.equal(r.push.layersUploaded, 2);
  });

  it('gets the upload through a registry that resets connections', async (t) => {
    const dir = await tempDir(t, 'obd-live-reset-');
    const reg = await startRegistry();
    t.after(() => reg.stop());
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port });
    t.after(() => proxy.stop());
    // The first upload request of each kind (start, data, finish) has its connection reset.
    const hit = new Set<string>();
    proxy.rule = (q) => {
      if (!q.url.includes('/blobs/uploads/')) return undefined;
      const kind = `${q.method} ${q.url.includes('digest=') ? 'finish' : 'data'}`;
      if (hit.has(kind)) return undefined;
      hit.add(kind);
      return { kind: 'reset' };
    };
    const { raw, layer } = await baseLayer(dir);
    const live = await serveLive(dir, [layer]);
    try {
      const c = await connect(live.socket);
      const A = pattern('reset', 512 << 10);
      await mustWrite(c, 0, A);
      const ref = `${proxy.host}/disks/reset:s1`;
      const s = await obd(['snapshot', '--control', live.control, '--push', ref, '--json']);
      assert.equal(s.code, 0, s.stderr + s.stdout);
      assert.ok(proxy.seen.filter((q) => q.fault === 'reset').length >= 2, 'connections were reset during the upload');
      const expected = Buffer.from(raw);
      A.copy(expected, 0);
      assert.ok((await readImage(ref)).equals(expected), 'the pushed image reads as the disk at the snapshot point');
      c.disconnect();
    } finally {
      assert.equal(await live.serve.stop(), 0, live.serve.stderr());
    }
  });

  it('a stop during a paced snapshot cancels it: quick exit, no temp files, no image pushed, the next start commits and pushes it', async (t) => {
    const dir = await tempDir(t, 'obd-live-stop-');
    const reg = await startRegistry();
    t.after(() => reg.stop());
    const { raw, layer } = await baseLayer(dir);
    // 1 MiB/s: the 6 MiB of incompressible data take seconds to commit, hash and upload.
    let live = await serveLive(dir, [layer], ['--snapshot-rate', '1M']);
    const A = randomBytes(6 << 20);
    let stopped = false;
    t.after(() => {
      if (!stopped) live.serve.child.kill('SIGKILL');
    });
    const c = await connect(live.socket);
    await mustWrite(c, 1 << 20, A);
    await mustFlush(c);
    const ref = `${reg.host}/disks/stop:s1`;
    const snap = controlRequest({ address: live.control }, 'POST', '/v1/snapshot', { push: ref }).then(
      () => 'finished',
      (e: Error) => e.message,
    );
    await new Promise((r) => setTimeout(r, 1500));
    c.disconnect();
    const t0 = performance.now();
    assert.equal(await live.serve.stop(), 0, live.serve.stderr());
    stopped = true;
    const stopMs = performance.now() - t0;
    assert.ok(stopMs < 4000, `obd serve took ${stopMs.toFixed(0)} ms to stop (the snapshot thread was not cancelled)`);
    assert.match(await snap, /cancelled|stopping/i, 'the snapshot request failed with the cancellation');
    assert.deepEqual((await readdir(dir)).filter((f) => f.includes('.tmp-')), [], 'no temp file left');
    assert.equal(await manifestDigest(reg.host, 'disks/stop:s1'), 404, 'no image under the tag');

    live = await serveLive(dir, [layer]);
    stopped = false;
    const c2 = await connect(live.socket);
    const expected = Buffer.from(raw);
    A.copy(expected, 1 << 20);
    assert.ok((await mustRead(c2, 1 << 20, A.length)).equals(A), 'the restarted disk holds the flushed writes');
    const s = await obd(['snapshot', '--control', live.control, '--push', ref, '--json']);
    assert.equal(s.code, 0, s.stderr + s.stdout);
    assert.ok((await readImage(ref)).equals(expected), 'the layer the stop left sealed is committed and pushed by the next snapshot');
    c2.disconnect();
    assert.equal(await live.serve.stop(), 0, live.serve.stderr());
    stopped = true;
  });
});
