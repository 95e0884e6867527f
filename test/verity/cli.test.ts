/**
 * Verity through the CLI (docs/format.md §7): a layer damaged in the registry's storage
 * reads as EIO through NBD (qemu-io) while the rest of the disk reads and the server stays
 * up and heals once the blob is restored; `obd verify` on a registry reference, a pulled
 * config.v1.json, an OCI layout and layer files (exit 1 on damage or a broken chain);
 * `obd verity add`; `obd cache ls|verify|gc`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { DIGESTS, FIXTURES } from '../helpers/recipes.ts';
import { obd, serveJson } from '../helpers/cli.ts';
import { openRemoteImage } from '../../src/remote/image.ts';
import { startRegistry } from '../remote/helpers/registry.ts';
import { tempDir } from '../helpers/temp.ts';

const run = promisify(execFile);
const LAYERS = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((n) => path.join(FIXTURES, 'lsmt', n));

test('a byte damaged in the registry: EIO through NBD for its range only, the server stays up and heals', async (t) => {
  const dir = await tempDir(t);
  const reg = await startRegistry();
  t.after(() => reg.stop());
  const ref = `${reg.host}/v/nbd:v1`;
  const pushed = await obd(['push', '--json', ...LAYERS, ref]);
  assert.equal(pushed.code, 0, pushed.stderr);
  // The bottom layer's blob is the largest (~1.1 MB, five refill units).
  const top = (JSON.parse(pushed.stdout) as { layers: { digest: string }[] }).layers[0]!.digest;
  const blob = path.join(reg.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', top.slice(7, 9), top.slice(7), 'data');
  const good = await readFile(blob);
  // One byte in chunk 6 (refill unit 3): data the disk shows, away from what opening reads
  // (unit 0: tar and zfile headers; unit 4: jump table and trailer).
  const bad = Buffer.from(good);
  bad[6 * 128 * 1024 + 777]! ^= 0x80;
  await writeFile(blob, bad);

  const server = await serveJson([ref, '--require-verity', '--socket', path.join(dir, 's.sock')]);
  try {
    const uri = server.ready.exports[0]!.uri;
    const size = Number((await run('nbdinfo', ['--size', uri])).stdout.trim());
    const step = 1 << 20;
    const cmds = [];
    for (let off = 0; off < size; off += step) cmds.push('-c', `read ${off} ${Math.min(step, size - off)}`);
    const { stdout, stderr } = await run('qemu-io', ['-r', '-f', 'raw', uri, ...cmds]).catch((e: { stdout: string; stderr: string }) => e);
    const text = stdout + stderr;
    const failed = (text.match(/Input\/output error/g) ?? []).length;
    const read = (text.match(/^read \d+\/\d+ bytes/gm) ?? []).length;
    assert.ok(failed >= 1, `some read failed with EIO: ${text.slice(0, 3000)}`);
    assert.ok(read >= 1 && read + failed === cmds.length / 2, `the other reads succeeded (${read} ok, ${failed} failed)`);
    await writeFile(blob, good);
    const { stdout: sum } = await run('bash', ['-c', `nbdcopy '${uri}' - | sha256sum`]);
    assert.equal(sum.split(' ')[0], DIGESTS.layer123, 'the same server reads the whole disk once the blob is restored');
  } finally {
    await writeFile(blob, good);
    assert.equal(await server.stop(), 0);
  }

  // obd verify on the registry reference (layers downloaded once) and on a pulled config.v1.json.
  const remoteCheck = await obd(['verify', '--json', ref]);
  assert.equal(remoteCheck.code, 0, remoteCheck.stdout + remoteCheck.stderr);
  const rr = JSON.parse(remoteCheck.stdout) as { chain: { ok: boolean }; layers: { checks: { check: string; ok: boolean }[] }[] };
  assert.deepEqual(rr.layers.map((l) => l.checks.map((c) => `${c.check}:${c.ok}`).join(' ')), Array(3).fill('digest:true tree:true zfile:true lsmt:true'));
  assert.ok(rr.chain.ok);
  assert.equal((await obd(['pull', ref, path.join(dir, 'pulled')])).code, 0);
  const cfgCheck = await obd(['verify', '--json', path.join(dir, 'pulled', 'config.v1.json')]);
  assert.equal(cfgCheck.code, 0, cfgCheck.stdout + cfgCheck.stderr);
  assert.ok((JSON.parse(cfgCheck.stdout) as { layers: { digest: string }[] }).layers.every((l) => l.digest?.startsWith('sha256:')));

  // The cache commands on a cache this image filled.
  const cacheDir = path.join(dir, 'cache');
  const img = await openRemoteImage(ref, { dockerConfig: false, cacheDir });
  for (const l of img.lazy) {
    const b = new Uint8Array(l.size);
    await l.read(b, 0);
  }
  await img.close();
  const ls = await obd(['cache', 'ls', '--json', cacheDir]);
  assert.equal(ls.code, 0, ls.stderr);
  assert.equal((JSON.parse(ls.stdout) as { blobs: unknown[] }).blobs.length, 3);
  const ok = await obd(['cache', 'verify', '--json', cacheDir]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.ok((JSON.parse(ok.stdout) as { blobs: { complete: boolean }[] }).blobs.every((b) => b.complete));
  const data = path.join(cacheDir, 'sha256', top.slice(7) + '.data');
  const cached = await readFile(data);
  cached[300_000]! ^= 1;
  await writeFile(data, cached);
  const damaged = await obd(['cache', 'verify', '--json', cacheDir]);
  assert.equal(damaged.code, 1);
  const rep = JSON.parse(damaged.stdout) as { blobs: { key: string; dropped: number }[] };
  assert.equal(rep.blobs.find((b) => b.key === top)!.dropped, 1);
  assert.equal((await obd(['cache', 'verify', cacheDir])).code, 0, 'the damaged unit is gone: the cache checks clean');
  const gc = await obd(['cache', 'gc', '--json', '--max-size', '1M', cacheDir]);
  assert.equal(gc.code, 0, gc.stderr);
  assert.ok((JSON.parse(gc.stdout) as { usage: number }).usage <= 1 << 20);
});

test('obd verity add and obd verify on an OCI layout and on layer files', async (t) => {
  const dir = await tempDir(t);
  const layout = `oci:${dir}/layout:v1`;
  assert.equal((await obd(['push', '--no-verity', ...LAYERS, layout])).code, 0);
  const plain = await obd(['verify', '--json', layout]);
  assert.equal(plain.code, 0, plain.stdout + plain.stderr);
  assert.ok((JSON.parse(plain.stdout) as { layers: { checks: { check: string }[] }[] }).layers.every((l) => !l.checks.some((c) => c.check === 'tree')));
  const added = await obd(['verity', 'add', '--json', layout]);
  assert.equal(added.code, 0, added.stderr);
  assert.deepEqual((JSON.parse(added.stdout) as { layers: { added: boolean }[] }).layers.map((l) => l.added), [true, true, true]);
  const inspected = await obd(['inspect', layout]);
  assert.equal((inspected.stdout.match(/ verity \(tree sha256:/g) ?? []).length, 3, inspected.stdout);
  const v = await obd(['verify', '--json', layout]);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const report = JSON.parse(v.stdout) as { ok: boolean; chain: { ok: boolean }; layers: { checks: { check: string; ok: boolean }[] }[] };
  assert.deepEqual(report.layers[0]!.checks.map((c) => c.check), ['digest', 'tree', 'zfile', 'lsmt']);
  assert.ok(report.chain.ok);

  // One byte of a layer blob damaged: digest, tree and zfile CRC all say so; exit 1.
  const blobs = path.join(dir, 'layout', 'blobs', 'sha256');
  const manifest = JSON.parse(await readFile(path.join(blobs, (JSON.parse(await readFile(path.join(dir, 'layout', 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] }).manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'v1')!.digest.slice(7)), 'utf8')) as { layers: { digest: string }[] };
  const victim = path.join(blobs, manifest.layers[1]!.digest.slice(7));
  const bytes = await readFile(victim);
  bytes[bytes.length >> 1]! ^= 0x20;
  await writeFile(victim, bytes);
  const broken = await obd(['verify', '--json', layout]);
  assert.equal(broken.code, 1);
  const checks = (JSON.parse(broken.stdout) as { layers: { checks: { check: string; ok: boolean }[] }[] }).layers[1]!.checks;
  assert.deepEqual(checks.filter((c) => !c.ok).map((c) => c.check), ['digest', 'tree', 'zfile']);
  assert.ok((await readdir(blobs)).length > 0);

  // Layer files: the chain holds bottom → top, and not upside down.
  assert.equal((await obd(['verify', ...LAYERS])).code, 0);
  const flipped = await obd(['verify', '--json', LAYERS[1]!, LAYERS[0]!]);
  assert.equal(flipped.code, 1);
  assert.equal((JSON.parse(flipped.stdout) as { chain: { ok: boolean } }).chain.ok, false);
});
