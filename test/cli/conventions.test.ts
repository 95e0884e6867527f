/**
 * The CLI speaks its neighbours' conventions: qemu-img map's JSON, one set of option names,
 * defaults in --help, bare ports, JSON failures, messages that name the real cause, and a
 * clean `npx obd`. Through the real CLI and real peers (qemu-img, nbdinfo, npm).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { readFile, readdir, rename, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MapEntry } from '../../src/image/map.ts';
import { FIXTURES, sha256 } from '../helpers/recipes.ts';
import { obd, serveJson, treeDigest } from '../helpers/cli.ts';
import { must } from '../nbd/helpers/run.ts';
import { freePort } from '../remote/helpers/registry.ts';
import { tempDir } from '../helpers/temp.ts';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const L = (n: string) => path.join(FIXTURES, 'lsmt', n);

/** [start, end, value] runs of `value` over the entries, neighbours with equal values joined. */
function runs<T extends { start?: number; offset?: number; length: number }>(entries: T[], value: (e: T) => unknown, at: (e: T) => number): [number, number, unknown][] {
  const out: [number, number, unknown][] = [];
  for (const e of entries) {
    const v = JSON.stringify(value(e));
    const last = out.at(-1);
    if (last && last[1] === at(e) && last[2] === v) last[1] += e.length;
    else out.push([at(e), at(e) + e.length, v]);
  }
  return out;
}

describe('conventions of the neighbouring tools', { concurrency: true }, () => {
  test("map --json has qemu-img map's shape, depth as qemu:allocation-depth, offsets into the layer files", async (t) => {
    const dir = await tempDir(t);
    const files = [L('layer1.lsmt'), L('layer2.lsmt')];
    const r = await obd(['map', '--json', ...files]);
    assert.equal(r.code, 0, r.stderr);
    const ours: MapEntry[] = JSON.parse(r.stdout);
    for (const e of ours) assert.deepEqual(Object.keys(e), ['start', 'length', 'depth', 'present', 'zero', 'data', ...(e.offset === undefined ? [] : ['offset'])]);

    const s = await serveJson([...files, '--socket', path.join(dir, 's.sock')]);
    try {
      const uri = s.ready.exports[0]!.uri;
      const depth: { offset: number; length: number; type: number }[] = JSON.parse(await must('nbdinfo', ['--json', '--map=qemu:allocation-depth', uri]));
      assert.deepEqual(runs(ours, (e) => e.depth, (e) => e.start), runs(depth, (e) => e.type, (e) => e.offset));
      const qemu: MapEntry[] = JSON.parse(await must('qemu-img', ['map', '--output=json', uri]));
      assert.deepEqual(runs(ours, (e) => [e.zero, e.data], (e) => e.start), runs(qemu, (e) => [e.zero, e.data], (e) => e.start));
    } finally {
      assert.equal(await s.stop(), 0);
    }

    const raw = path.join(dir, 'disk.raw');
    assert.equal((await obd(['export', ...files, raw])).code, 0);
    const disk = await readFile(raw);
    const layers = await Promise.all(files.map((f) => readFile(f)));
    const data = ours.filter((e) => e.data);
    assert.ok(data.length > 0 && data.every((e) => e.offset !== undefined));
    for (const e of data) {
      const file = layers[files.length - e.depth]!;
      assert.ok(file.subarray(e.offset!, e.offset! + e.length).equals(disk.subarray(e.start, e.start + e.length)), `extent at ${e.start}`);
    }
    const compressed: MapEntry[] = JSON.parse((await obd(['map', '--json', L('layer1.lz4bs4.zfile')])).stdout);
    assert.ok(compressed.some((e) => e.data) && compressed.every((e) => e.offset === undefined), 'no file offsets inside a compressed layer');
  });

  test('option names agree: -z/--compress and --block-size 4K in push as in commit, merge and import', async (t) => {
    for (const cmd of ['push', 'commit', 'merge', 'import']) {
      const help = (await obd([cmd, '--help'])).stdout;
      assert.match(help, /-z, --compress <algorithm>/, cmd);
      assert.match(help, /--block-size <size>/, cmd);
    }
    const dir = await tempDir(t);
    const pushed = await obd(['push', '--json', '-z', 'zstd', '--block-size', '16K', L('layer1.lsmt'), `oci:${dir}/img:v1`]);
    assert.equal(pushed.code, 0, pushed.stderr);
    const blob = path.join(dir, 'img', 'blobs', ...JSON.parse(pushed.stdout).layers[0].digest.split(':'));
    const info = JSON.parse((await obd(['zfile', 'info', '--json', blob])).stdout);
    assert.equal(info.algorithm, 'zstd');
    assert.equal(info.blockSize, 16384);
  });

  test('--help shows every default: timeouts, retries, cache size, refill, download rate', async () => {
    const help = (await obd(['serve', '--help'])).stdout.replace(/\s+/g, ' ');
    for (const d of [/--timeout <ms> .*?\(default: 30000\)/, /--retries <n> .*?\(default: 4\)/, /--cache-size <size> .*?\(default: 4G\)/, /--refill <size> .*?\(default: 256K\)/, /--download-rate <MiB\/s> .*?\(default: 100\)/]) {
      assert.match(help, d);
    }
    assert.match((await obd(['push', '--help'])).stdout.replace(/\s+/g, ' '), /--block-size <size> .*?\(default: 4K\)/);
  });

  test('--listen takes a bare port and binds 127.0.0.1', async () => {
    const port = await freePort();
    const s = await serveJson([L('layer1.lsmt'), '--listen', String(port)]);
    try {
      assert.equal(s.ready.host, '127.0.0.1');
      assert.equal(s.ready.port, port);
      const info = JSON.parse(await must('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${port}`]));
      assert.equal(info['virtual-size'], 67108864);
    } finally {
      assert.equal(await s.stop(), 0);
    }
  });

  test('with --json every command reports its failure as JSON on stdout and exits non-zero', async (t) => {
    const dir = await tempDir(t);
    const m = path.join(dir, 'missing');
    const cases = [
      ['info', m],
      ['export', L('layer1.lsmt'), path.join(m, 'out.raw')],
      ['map', m],
      ['create', path.join(dir, 'x.data'), path.join(dir, 'x.index')],
      ['commit', `${m}.data`, `${m}.index`, path.join(dir, 'c.lsmt')],
      ['merge', m, path.join(dir, 'm.lsmt')],
      ['import', `${m}.raw`, path.join(dir, 'i.lsmt')],
      ['rw-info', `${m}.data`, `${m}.index`],
      ['zfile', 'compress', m, path.join(dir, 'z')],
      ['zfile', 'decompress', m, path.join(dir, 'd')],
      ['zfile', 'verify', m],
      ['zfile', 'info', m],
      ['serve', m],
      ['push', m, `oci:${dir}/img`],
      ['pull', `oci:${m}:v1`, path.join(dir, 'p')],
      ['copy', `oci:${m}:v1`, `oci:${dir}/c`],
      ['inspect', `oci:${m}:v1`],
      ['demo', '--no-serve', '--dir', L('layer1.lsmt')],
      ['info', '--bogus-option', L('layer1.lsmt')],
    ];
    const results = await Promise.all(cases.map((args) => obd([...args, '--json'])));
    for (const [i, r] of results.entries()) {
      const what = cases[i]!.join(' ');
      assert.notEqual(r.code, 0, what);
      const { error } = JSON.parse(r.stdout);
      assert.equal(typeof error.code, 'string', what);
      assert.ok(error.message.length > 0, what);
    }
    assert.deepEqual(await readdir(dir), [], 'nothing written');
  });

  test('serve --json reports listening, errors and shutdown as JSON lines', async (t) => {
    const dir = await tempDir(t);
    const s = await serveJson([L('layer1.lsmt'), '--socket', path.join(dir, 's.sock')]);
    assert.equal(s.ready.socket, path.join(dir, 's.sock'));
    await new Promise<void>((resolve) => {
      const c = net.connect(path.join(dir, 's.sock'), () => c.write(Buffer.alloc(64, 0x41)));
      c.on('close', () => resolve());
      c.on('error', () => {});
      c.resume();
    });
    assert.equal(await s.stop(), 0);
    const kinds = s.events.map((e) => e.event);
    assert.deepEqual([kinds[0], ...kinds.slice(-2)], ['ready', 'stopping', 'stopped']);
    const err = s.events.find((e) => e.event === 'error');
    assert.ok(err && err.type === 'protocol-error' && typeof err.message === 'string', JSON.stringify(s.events));
  });

  test('messages name the real cause: output directory, socket directory, a moved pull, the largest size', async (t) => {
    const dir = await tempDir(t);
    const before = sha256(await readFile(L('layer1.lsmt')));
    const out = await obd(['export', L('layer1.lsmt'), path.join(dir, 'nodir', 'out.raw')]);
    assert.equal(out.code, 1);
    assert.match(out.stderr, new RegExp(`no such directory ${path.join(dir, 'nodir')}`));
    assert.doesNotMatch(out.stderr, /\.tmp-/);
    assert.equal(sha256(await readFile(L('layer1.lsmt'))), before);

    const sock = await obd(['serve', L('layer1.lsmt'), '--socket', path.join(dir, 'nodir', 's.sock')]);
    assert.equal(sock.code, 1);
    assert.match(sock.stderr, /no such directory/);
    assert.doesNotMatch(sock.stderr, /EACCES|permission/);

    assert.equal((await obd(['push', L('layer1.lsmt'), `oci:${dir}/img:v1`])).code, 0);
    assert.equal((await obd(['pull', `oci:${dir}/img:v1`, path.join(dir, 'p')])).code, 0);
    await rename(path.join(dir, 'p'), path.join(dir, 'q'));
    const tree = await treeDigest(path.join(dir, 'q'));
    const moved = await obd(['serve', path.join(dir, 'q', 'config.v1.json'), '--socket', path.join(dir, 's.sock')]);
    assert.equal(moved.code, 1);
    assert.match(moved.stderr, new RegExp(`expected its blob at ${path.join(dir, 'p', 'blobs')}.*it is at ${path.join(dir, 'q', 'blobs')}.*moved`));
    assert.deepEqual(await treeDigest(path.join(dir, 'q')), tree);

    const big = await obd(['create', path.join(dir, 'b.data'), path.join(dir, 'b.index'), '--size', '100P']);
    assert.equal(big.code, 1);
    assert.match(big.stderr, /too large.*largest disk is 9007199254740480 bytes/);
    await assert.rejects(stat(path.join(dir, 'b.data')));
  });

  test('npx obd on the system npm prints no engine warnings', (t) => {
    const dirs = (process.env.PATH ?? '').split(':').filter((d) => d && !d.includes('node_modules') && !d.includes('node-gyp-bin'));
    const npx = dirs.map((d) => path.join(d, 'npx')).find((p) => spawnSync('test', ['-x', p]).status === 0);
    if (!npx) return t.skip('no npx outside node_modules');
    const r = spawnSync(npx, ['--no-install', 'obd', '--version'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, PATH: dirs.join(':') } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), JSON.parse(spawnSync('cat', [path.join(ROOT, 'package.json')], { encoding: 'utf8' }).stdout).version);
    assert.doesNotMatch(r.stderr, /EBADENGINE|npm warn/);
  });
});
