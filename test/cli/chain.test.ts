/**
 * Never mis-stack silently: every command that stacks layers checks the parent-uuid chain by
 * default (--no-verify-chain allows a broken one), layers without a uuid pass with a warning,
 * commit and create record the chain, a writable upper of another size is refused, and the
 * README's weekly cycle works end to end with a real NBD client writing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FIXTURES, R } from '../helpers/recipes.ts';
import { obd, serveJson, treeDigest, fixtureCopies } from '../helpers/cli.ts';
import { missing, run, sha256, sha256File } from '../nbd/helpers/run.ts';

const L = (n: string) => path.join(FIXTURES, 'lsmt', n);
const A1 = 'A1A1A1A1-0000-4000-8000-000000000001';
const A2 = 'A2A2A2A2-0000-4000-8000-000000000002';
const NULL_UUID = '00000000-0000-0000-0000-000000000000';

const workspace = () => fixtureCopies('obd-chain-', { 'monday.lsmt': L('layer1.lsmt'), 'tuesday.lsmt': L('layer2.lsmt') });

async function ok(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const r = await obd(args);
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  return r;
}

test('every stacking command refuses layers out of order, naming both layers and both uuids; --no-verify-chain stacks them', async () => {
  const w = await workspace();
  try {
    const wrong = [w.f('tuesday.lsmt'), w.f('monday.lsmt')];
    const before = await treeDigest(w.dir);
    const commands: string[][] = [
      ['export', ...wrong, w.f('out.raw')],
      ['map', ...wrong],
      ['info', ...wrong],
      ['merge', ...wrong, w.f('out.lsmt')],
      ['push', ...wrong, `oci:${w.f('images')}:v1`],
      ['serve', ...wrong, '--socket', w.f('s.sock')],
    ];
    for (const args of commands) {
      const r = await obd(args);
      assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`monday\\.lsmt \\(uuid ${A1}\\) has no parent uuid, but it is stacked on .*tuesday\\.lsmt \\(uuid ${A2}\\)`), args[0]);
      assert.match(r.stderr, /--no-verify-chain/, args[0]);
      assert.deepEqual(await treeDigest(w.dir), before, `${args[0]}: inputs unchanged, nothing written`);
    }
    for (const args of commands.slice(0, 5)) await ok([...args, '--no-verify-chain', '--json']);
    const s = await serveJson([...wrong, '--socket', w.f('s.sock'), '--no-verify-chain']);
    assert.equal(await s.stop(), 0);
    assert.equal(await sha256File(w.f('monday.lsmt')), await sha256File(L('layer1.lsmt')));
  } finally {
    await w.done();
  }
});

test('layers without a uuid are stacked with a warning on stderr; --json stdout stays JSON', async () => {
  const w = await workspace();
  try {
    await ok(['commit', L('layer3-rw.data'), L('layer3-rw.index'), w.f('anon.lsmt'), '--uuid', NULL_UUID, '--parent', NULL_UUID]);
    const before = await treeDigest(w.dir);
    const r = await ok(['map', '--json', w.f('monday.lsmt'), w.f('anon.lsmt'), w.f('tuesday.lsmt')]);
    assert.ok(Array.isArray(JSON.parse(r.stdout)), 'stdout is the JSON map alone');
    assert.match(r.stderr, /^obd: warning: .*anon\.lsmt: has no uuid and no parent uuid/m);
    assert.match(r.stderr, /^obd: warning: .*tuesday\.lsmt: cannot check that it belongs on .*anon\.lsmt, which has no uuid/m);
    assert.deepEqual(await treeDigest(w.dir), before);
  } finally {
    await w.done();
  }
});

test('obd commit gives a fresh random uuid, with the writable layer\'s parent', async () => {
  const w = await workspace();
  try {
    const data = await sha256File(L('layer3-rw.data'));
    const uuids = new Set<string>();
    for (const out of ['a.lsmt', 'b.lsmt']) {
      const c = JSON.parse((await ok(['commit', '--json', L('layer3-rw.data'), L('layer3-rw.index'), w.f(out)])).stdout);
      assert.notEqual(c.uuid, NULL_UUID);
      assert.equal(c.parentUuid, A2);
      uuids.add(c.uuid);
    }
    assert.equal(uuids.size, 2, 'each commit a new uuid');
    assert.equal(await sha256File(L('layer3-rw.data')), data, 'the writable layer is unchanged');
  } finally {
    await w.done();
  }
});

test('a writable upper of another virtual size is refused; --writable without --upper names it', async () => {
  const w = await workspace();
  try {
    await ok(['create', w.f('small.data'), w.f('small.index'), '--size', '1M', '--parent', A2]);
    const before = await treeDigest(w.dir);
    let r = await obd(['serve', w.f('monday.lsmt'), w.f('tuesday.lsmt'), '--writable', '--upper', w.f('small.data'), w.f('small.index'), '--socket', w.f('s.sock')]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /small\.data: the writable layer's virtual size 1048576 differs from the size 67108864 of the layers below it/);
    r = await obd(['serve', w.f('monday.lsmt'), '--writable', '--socket', w.f('s.sock')]);
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, /--writable: .* --upper DATA INDEX is missing/);
    assert.deepEqual(await treeDigest(w.dir), before);
  } finally {
    await w.done();
  }
});

test('obd push --append of the image\'s top layer is refused, whatever its compression', async () => {
  const w = await workspace();
  try {
    const ref = `oci:${w.f('images')}:v1`;
    await ok(['push', w.f('monday.lsmt'), w.f('tuesday.lsmt'), ref]);
    const before = await treeDigest(w.f('images'));
    // By uuid, before anything is compressed or uploaded: the same layer in any compression.
    let r = await obd(['push', '--append', '-z', 'zstd', w.f('tuesday.lsmt'), ref]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`tuesday\\.lsmt: the same layer \\(uuid ${A2}\\) as the layer below it, the top layer of oci:.*:v1 \\(sha256:[0-9a-f]{64}\\)`));
    // By digest, even without the chain check.
    r = await obd(['push', '--append', '--no-verify-chain', w.f('tuesday.lsmt'), ref]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /tuesday\.lsmt: already layer 2 of 2 of oci:.*:v1 \(digest sha256:[0-9a-f]{64}\); nothing was appended/);
    assert.deepEqual(await treeDigest(w.f('images')), before, 'the layout is unchanged');
  } finally {
    await w.done();
  }
});

const peers = missing('qemu-io');

test('the README weekly cycle: import, import --base, create, serve --writable (qemu-io writes), commit, create on it, commit, merge', { skip: peers.length ? `missing ${peers}` : false }, async () => {
  const w = await workspace();
  try {
    const M = 1 << 20;
    const disk = Buffer.alloc(8 * M);
    R('week-mon', 2 * M).copy(disk, 0);
    R('week-mon-b', M).copy(disk, 5 * M);
    await writeFile(w.f('monday.raw'), disk);
    R('week-tue', M / 2).copy(disk, M);
    disk.fill(0, 5 * M, 5 * M + M / 4);
    await writeFile(w.f('tuesday.raw'), disk);
    const inputs = { monday: sha256(await readFile(w.f('monday.raw'))), tuesday: sha256(disk) };

    await Promise.all(['monday.lsmt', 'tuesday.lsmt'].map((n) => rm(w.f(n))));
    await ok(['import', w.f('monday.raw'), w.f('monday.lsmt')]);
    await ok(['import', w.f('tuesday.raw'), w.f('tuesday.lsmt'), '--base', w.f('monday.lsmt')]);
    const week = ['monday.lsmt', 'tuesday.lsmt'].map(w.f);

    /** Serves `week` writable over a new upper made with create --base, writes with qemu-io, commits it. */
    const day = async (name: string, qemuIo: string[]) => {
      await ok(['create', w.f(`${name}.data`), w.f(`${name}.index`), '--base', ...week]);
      const s = await serveJson([...week, '--writable', '--upper', w.f(`${name}.data`), w.f(`${name}.index`), '--socket', w.f(`${name}.sock`)]);
      try {
        const io = await run('qemu-io', ['-f', 'raw', ...qemuIo.flatMap((c) => ['-c', c]), '-c', 'flush', s.ready.exports[0]!.uri]);
        assert.equal(io.code, 0, io.stderr);
      } finally {
        assert.equal(await s.stop(), 0);
      }
      await ok(['commit', w.f(`${name}.data`), w.f(`${name}.index`), w.f(`${name}.lsmt`), '-m', name, '-z', 'lz4']);
      week.push(w.f(`${name}.lsmt`));
    };
    await day('wednesday', ['write -P 0x5a 3M 64k', 'write -z 1M 64k']);
    disk.fill(0x5a, 3 * M, 3 * M + 65536);
    disk.fill(0, M, M + 65536);
    await day('thursday', ['write -P 0xa5 7M 128k']);
    disk.fill(0xa5, 7 * M, 7 * M + 131072);

    const infos = JSON.parse((await ok(['info', '--json', ...week])).stdout) as { uuid: string; parentUuid: string }[];
    assert.equal(new Set(infos.map((i) => i.uuid)).size, 4);
    infos.forEach((i, n) => {
      assert.notEqual(i.uuid, NULL_UUID);
      assert.equal(i.parentUuid, n === 0 ? NULL_UUID : infos[n - 1]!.uuid, `layer ${n} records the one below`);
    });
    const merged = await ok(['merge', ...week, w.f('week.lsmt')]);
    assert.equal(merged.stderr, '', 'no chain warnings');
    await ok(['export', w.f('week.lsmt'), w.f('week.raw')]);
    assert.equal(sha256(await readFile(w.f('week.raw'))), sha256(disk), 'the merged week reads as the disk with every day\'s writes');
    assert.equal(sha256(await readFile(w.f('monday.raw'))), inputs.monday);
    assert.equal(sha256(await readFile(w.f('tuesday.raw'))), inputs.tuesday);
  } finally {
    await w.done();
  }
});
