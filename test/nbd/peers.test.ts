/**
 * Real NBD clients against the server: qemu-img, qemu-io, nbdinfo, nbdcopy. The layered
 * export is the reference fixture stack (layer1 + layer2 + layer3), whose flattened sha256
 * is known from the reference tools.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openImage } from '../../src/image/open.ts';
import { MemoryDevice } from '../../src/io/memory.ts';
import type { BlockDevice, Extent } from '../../src/io/types.ts';
import { FIXTURES, R } from '../helpers/recipes.ts';
import { missing, must, run, sha256, sha256File } from './helpers/run.ts';
import { startServer, type Running } from './helpers/server.ts';

const MiB = 1 << 20;
const STACK = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((f) => path.join(FIXTURES, 'lsmt', f));
const STACK_SHA = '2e934e7aadac27b164b562713673cdd0fd295e063f4edc6cf6fde77a54dcc967';
const absent = missing('qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy');

describe('nbd with real clients', { timeout: 120_000, skip: absent.length ? `peer tools missing: ${absent.join(', ')} (scripts/setup-peers.sh installs them)` : false }, () => {
  let srv: Running;
  let stack: BlockDevice;
  let ram: MemoryDevice;
  before(async () => {
    stack = await openImage(STACK);
    ram = new MemoryDevice(32 * MiB, 'ram');
    srv = await startServer({ exports: { stack, ram: { device: ram, description: 'scratch RAM disk' } } });
  });
  after(async () => {
    await srv.stop();
    await stack.close();
  });

  it('qemu-img info sees the size and format', async () => {
    const info = JSON.parse(await must('qemu-img', ['info', '--output=json', srv.uri('stack')]));
    assert.equal(info['virtual-size'], 64 * MiB);
    assert.equal(info.format, 'raw');
  });

  it('qemu-img convert and nbdcopy (1 and 4 connections) copy the flattened stack exactly', async () => {
    const out = path.join(srv.dir, 'out.raw');
    await must('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('stack'), out]);
    assert.equal(await sha256File(out), STACK_SHA);
    for (const conns of ['1', '4']) {
      const copy = path.join(srv.dir, `copy${conns}.raw`);
      await must('nbdcopy', ['-C', conns, '--requests', '16', srv.uri('stack'), copy]);
      assert.equal(await sha256File(copy), STACK_SHA, `nbdcopy -C ${conns}`);
    }
  });

  it('nbdinfo reports the export and --map matches the stack extents for both contexts', async () => {
    const info = JSON.parse(await must('nbdinfo', ['--json', srv.uri('stack')]));
    const e = info.exports[0];
    assert.equal(e['export-size'], 64 * MiB);
    assert.equal(e.is_read_only, true);
    assert.equal(e.can_multi_conn, true);
    assert.deepEqual(e.contexts, ['base:allocation', 'qemu:allocation-depth']);
    const extents = await stack.extents(0, stack.size);
    const expectBase = joinRuns(extents.map((x) => [x.length, x.kind === 'data' ? 0 : 3]));
    const expectDepth = joinRuns(extents.map((x) => [x.length, depth(x, stack.layerCount)]));
    const map = async (ctx: string) =>
      (JSON.parse(await must('nbdinfo', ['--map=' + ctx, '--json', srv.uri('stack')])) as { offset: number; length: number; type: number }[]).map(
        (m) => [m.length, m.type] as [number, number],
      );
    assert.deepEqual(await map('base:allocation'), expectBase);
    const depths = await map('qemu:allocation-depth');
    assert.deepEqual(depths, expectDepth);
    assert.deepEqual(new Set(depths.map(([, d]) => d)), new Set([0, 1, 2, 3]), 'every layer of the stack shows up');
  });

  it('nbdinfo --list shows every export', async () => {
    const list = JSON.parse(await must('nbdinfo', ['--list', '--json', srv.uri()]));
    const names = list.exports.map((x: { 'export-name': string; description?: string }) => [x['export-name'], x.description ?? '']);
    assert.deepEqual(names.sort(), [['ram', 'scratch RAM disk'], ['stack', '']]);
  });

  it('qemu-io pattern writes and reads, write-zeroes and discard on a writable export', async () => {
    const uri = srv.uri('ram');
    const io = async (...cmds: string[]) => {
      const r = await run('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout, /verification failed|error/i);
      return r.stdout;
    };
    await io('write -P 0xab 1M 256k', 'write -P 0xcd 1280k 4k', 'aio_write -P 0x11 4M 64k', 'aio_write -P 0x22 5M 64k', 'aio_flush');
    await io('read -P 0xab 1M 256k', 'read -P 0xcd 1280k 4k', 'read -P 0x11 4M 64k', 'read -P 0x22 5M 64k', 'read -P 0 8M 1M');
    assert.ok(ram.bytes.subarray(MiB, MiB + 256 * 1024).every((b) => b === 0xab));
    await io('write -z 1M 64k', 'discard 1088k 64k', 'write -z -u 1152k 64k');
    await io('read -P 0 1M 192k', 'read -P 0xab 1216k 64k');
    // A wrong pattern is caught: the check itself can fail.
    const bad = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 1M 4k', uri]);
    assert.match(bad.stdout + bad.stderr, /verification failed/);
  });

  it('nbdcopy uploads into a writable export and reads it back', async () => {
    const src = path.join(srv.dir, 'in.raw');
    const data = R('upload', 32 * MiB);
    data.fill(0, 8 * MiB, 16 * MiB);
    await writeFile(src, data);
    await must('nbdcopy', ['-C', '4', src, srv.uri('ram')]);
    assert.equal(sha256(ram.bytes), sha256(data));
    const back = path.join(srv.dir, 'back.raw');
    await must('nbdcopy', [srv.uri('ram'), back]);
    assert.ok((await readFile(back)).equals(data));
  });
});

function depth(e: Extent, layers: number): number {
  return e.kind === 'hole' ? 0 : layers - e.layer;
}

function joinRuns(runs: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  for (const [len, f] of runs) {
    const last = out.at(-1);
    if (last && last[1] === f) last[0] += len;
    else out.push([len, f]);
  }
  return out;
}
