/**
 * Live snapshots through `obd serve --control` and `obd snapshot`: point in time with the
 * client connected, the committed layer's identity, the record a restart serves, and a push
 * that uploads only the new layer and reads back as the disk at the snapshot point.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { obd, serveJson } from '../helpers/cli.ts';
import { tempDir } from '../helpers/temp.ts';
import { startRegistry } from '../remote/helpers/registry.ts';
import { VSIZE, baseLayer, connect, mustFlush, mustRead, mustWrite, pattern, readImage, serveLive } from './helpers.ts';

async function info(file: string): Promise<{ uuid: string; parentUuid: string }> {
  const r = await obd(['info', '--json', file]);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  return Array.isArray(doc) ? doc[0] : doc;
}

async function exportRaw(dir: string, image: string[], name: string): Promise<Buffer> {
  const out = path.join(dir, name);
  const r = await obd(['export', ...image, out]);
  assert.equal(r.code, 0, r.stderr);
  return readFile(out);
}

describe('live snapshot', { timeout: 120_000 }, () => {
  it('seals exactly the writes acknowledged before it while the client stays connected; a restart serves the recorded stack', async (t) => {
    const dir = await tempDir(t, 'obd-live-');
    const { raw, layer } = await baseLayer(dir);
    let live = await serveLive(dir, [layer]);
    try {
      const c = await connect(live.socket);
      const A = pattern('A', 1 << 20);
      const B = pattern('B', 1 << 20);
      await mustWrite(c, 512 << 10, A);
      const C = pattern('C', 64 << 10);
      await mustWrite(c, 4 << 20, C);
      const commit = path.join(dir, 'snap1.lsmt');
      const s = await obd(['snapshot', '--control', live.control, '--commit', commit, '--json']);
      assert.equal(s.code, 0, s.stderr + s.stdout);
      const r = JSON.parse(s.stdout);
      assert.ok(r.pauseMs >= 0 && r.pauseMs < 2000, `pause ${r.pauseMs} ms`);
      // The same connection goes on: writes after the request land in the new upper.
      await mustWrite(c, 512 << 10, B);
      await mustFlush(c);
      assert.deepEqual(await mustRead(c, 512 << 10, 1 << 20), B);
      // Served from the committed layer and the base through the stack's incremental index.
      assert.deepEqual(await mustRead(c, 4 << 20, 64 << 10), C);
      assert.deepEqual(await mustRead(c, (1536 << 10) - 4096, 8192), Buffer.concat([B.subarray(B.length - 4096), raw.subarray(1536 << 10, (1536 << 10) + 4096)]));

      const expected = Buffer.from(raw);
      A.copy(expected, 512 << 10);
      C.copy(expected, 4 << 20);
      assert.ok((await exportRaw(dir, [layer, commit], 'snap.raw')).equals(expected), 'base + committed layer reads as the disk at the snapshot point');
      const base = await info(layer);
      const sealed = await info(commit);
      assert.equal(sealed.uuid, r.layer.uuid);
      assert.equal(sealed.parentUuid, base.uuid, 'the new layer names the layer below it');
      assert.notEqual(sealed.uuid, base.uuid);
      assert.equal(r.upper.parentUuid, sealed.uuid);

      const record = JSON.parse(await readFile(path.join(dir, 'rw.data.config.v1.json'), 'utf8'));
      assert.deepEqual(record.lowers, [{ file: layer }, { file: commit }]);
      assert.equal(record.upper.data, r.upper.data);
      c.disconnect();
      assert.equal(await live.serve.stop(), 0, live.serve.stderr());

      // The same arguments again: the record wins over the layer list given.
      live = await serveLive(dir, [layer]);
      const c2 = await connect(live.socket);
      assert.deepEqual(await mustRead(c2, 512 << 10, 1 << 20), B);
      assert.deepEqual(await mustRead(c2, 0, 512 << 10), raw.subarray(0, 512 << 10));
      // A second snapshot without commit keeps the sealed upper as a read-only lower.
      const s2 = await obd(['snapshot', '--control', live.control, '--json']);
      assert.equal(s2.code, 0, s2.stderr + s2.stdout);
      const r2 = JSON.parse(s2.stdout);
      const rec2 = JSON.parse(await readFile(path.join(dir, 'rw.data.config.v1.json'), 'utf8'));
      assert.deepEqual(rec2.lowers.at(-1), { data: r.upper.data, index: r.upper.index, obdSnapshot: true });
      assert.equal(rec2.upper.data, r2.upper.data);
      await mustWrite(c2, 0, A.subarray(0, 4096));
      assert.deepEqual(await mustRead(c2, 512 << 10, 4096), B.subarray(0, 4096));
      c2.disconnect();
      assert.equal(await live.serve.stop(), 0, live.serve.stderr());
      live = await serveLive(dir, [layer]);
      const c3 = await connect(live.socket);
      assert.deepEqual(await mustRead(c3, 0, 4096), A.subarray(0, 4096));
      assert.deepEqual(await mustRead(c3, 512 << 10, 1 << 20), B);
      c3.disconnect();
    } finally {
      await live.serve.stop();
    }
  });

  it('--push uploads only the new layer, and the pulled image reads as the disk at the snapshot point', async (t) => {
    const dir = await tempDir(t, 'obd-live-push-');
    const reg = await startRegistry();
    t.after(() => reg.stop());
    const { raw, layer } = await baseLayer(dir);
    const baseRef = `${reg.host}/disks/vm:base`;
    const p = await obd(['push', layer, baseRef, '--no-verity']);
    assert.equal(p.code, 0, p.stderr);
    const live = await serveLive(dir, [layer]);
    try {
      const c = await connect(live.socket);
      const A = pattern('pA', 256 << 10);
      const B = pattern('pB', 256 << 10);
      await mustWrite(c, 0, A);
      const ref1 = `${reg.host}/disks/vm:snap1`;
      const s = await obd(['snapshot', '--control', live.control, '--push', ref1, '-z', 'lz4', '--commit', path.join(dir, 'snap1.zfile'), '--json']);
      assert.equal(s.code, 0, s.stderr + s.stdout);
      await mustWrite(c, 0, B);
      const r = JSON.parse(s.stdout);
      assert.equal(r.push.layersUploaded, 1, 'the base layer was already in the registry');
      const expected = Buffer.from(raw);
      A.copy(expected, 0);
      assert.ok((await readImage(ref1)).equals(expected), 'the pushed image reads as the disk at the snapshot point');

      const ref2 = `${reg.host}/disks/vm:snap2`;
      const s2 = await obd(['snapshot', '--control', live.control, '--push', ref2, '--json']);
      assert.equal(s2.code, 0, s2.stderr + s2.stdout);
      const r2 = JSON.parse(s2.stdout);
      assert.equal(r2.push.layersUploaded, 1);
      const exp2 = Buffer.from(raw);
      B.copy(exp2, 0);
      assert.ok((await readImage(ref2)).equals(exp2));
      assert.ok(existsSync(r2.commit.file), 'a push without --commit commits next to the upper');
      c.disconnect();
    } finally {
      await live.serve.stop();
    }
  });

  it('a served config.v1.json is its own record: the snapshot renames a new config over it', async (t) => {
    const dir = await tempDir(t, 'obd-live-config-');
    const { raw, layer } = await baseLayer(dir);
    const config = path.join(dir, 'config.v1.json');
    await writeFile(config, JSON.stringify({ lowers: [{ file: 'base.lsmt' }], upper: { data: 'rw.data', index: 'rw.index' }, resultFile: 'result' }));
    const socket = path.join(dir, 's.sock');
    const control = path.join(dir, 'c.sock');
    let serve = await serveJson([config, '--writable', '--socket', socket, '--control', control]);
    try {
      const c = await connect(socket);
      const A = pattern('cA', 64 << 10);
      await mustWrite(c, 0, A);
      const commit = path.join(dir, 'mon.lsmt');
      const s = await obd(['snapshot', '--control', control, '--commit', commit, '--json']);
      assert.equal(s.code, 0, s.stderr + s.stdout);
      const doc = JSON.parse(await readFile(config, 'utf8'));
      assert.deepEqual(doc.lowers, [{ file: layer }, { file: commit }]);
      assert.equal(doc.resultFile, 'result', 'the config keeps its other fields');
      c.disconnect();
      assert.equal(await serve.stop(), 0, serve.stderr());
      // Plain obd serve (no control) reads the renamed config: base + the committed layer + the new upper.
      serve = await serveJson([config, '--socket', socket]);
      const c2 = await connect(socket);
      assert.deepEqual(await mustRead(c2, 0, 64 << 10), A);
      assert.deepEqual(await mustRead(c2, 1 << 20, 4096), raw.subarray(1 << 20, (1 << 20) + 4096));
      c2.disconnect();
    } finally {
      await serve.stop();
    }
  });

  it('a snapshot that cannot commit is refused before the switch', async (t) => {
    const dir = await tempDir(t, 'obd-live-refuse-');
    const { layer } = await baseLayer(dir);
    const live = await serveLive(dir, [layer]);
    try {
      const s = await obd(['snapshot', '--control', live.control, '--commit', layer, '--json']);
      assert.notEqual(s.code, 0);
      assert.match(JSON.parse(s.stdout).error.message, /already exists/);
      const record = JSON.parse(await readFile(path.join(dir, 'rw.data.config.v1.json'), 'utf8'));
      assert.equal(record.lowers.length, 1, 'nothing was switched');
      assert.equal(VSIZE, 8 << 20);
    } finally {
      await live.serve.stop();
    }
  });
});
