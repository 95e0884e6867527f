/**
 * Never destroy an input: every writing command refuses an existing output without --force
 * and an output that is one of its inputs always (same path, symlink, hard link), before
 * anything is written; SIGINT/SIGTERM remove temporary outputs; serve removes its socket and
 * lock on signals and when its output pipe closes. Inputs are checked byte for byte after.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, readdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FIXTURES, R } from '../helpers/recipes.ts';
import { MAIN, obd, serveJson, treeDigest, fixtureCopies, type Workspace } from '../helpers/cli.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { missing, sha256File } from '../nbd/helpers/run.ts';

const L = (n: string) => path.join(FIXTURES, 'lsmt', n);

/** A temp dir holding copies of layer1..3 (monday, tuesday, wednesday), layer 3's writable pair and a raw disk. */
async function workspace(): Promise<Workspace> {
  const w = await fixtureCopies('obd-outputs-', {
    'monday.lsmt': L('layer1.lsmt'),
    'tuesday.lsmt': L('layer2.lsmt'),
    'wednesday.lsmt': L('layer3.lsmt'),
    'rw.data': L('layer3-rw.data'),
    'rw.index': L('layer3-rw.index'),
  });
  await writeFile(w.f('t.raw'), R('outputs-raw', 1 << 20));
  return w;
}

/** Runs `obd args`, expects exit 1 with `re` on stderr, and every file in dir unchanged (none added). */
async function refused(dir: string, args: string[], re: RegExp): Promise<void> {
  const before = await treeDigest(dir);
  const r = await obd(args);
  assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, re, args.join(' '));
  assert.deepEqual(await treeDigest(dir), before, `${args.join(' ')}: inputs byte-identical, nothing written`);
}

test('an existing output is refused without --force: merge and export with the output forgotten', async () => {
  const w = await workspace();
  try {
    await refused(w.dir, ['merge', w.f('monday.lsmt'), w.f('tuesday.lsmt')], /tuesday\.lsmt: the output <output> already exists \(give --force/);
    await refused(w.dir, ['export', w.f('monday.lsmt'), w.f('tuesday.lsmt')], /tuesday\.lsmt: the output <output> already exists/);
    await refused(w.dir, ['import', w.f('t.raw'), w.f('tuesday.lsmt')], /<out> already exists/);
    await refused(w.dir, ['commit', w.f('rw.data'), w.f('rw.index'), w.f('wednesday.lsmt')], /<out> already exists/);
    await refused(w.dir, ['zfile', 'compress', w.f('t.raw'), w.f('monday.lsmt')], /<out> already exists/);
    await refused(w.dir, ['create', w.f('rw.data'), w.f('new.index'), '--size', '64M'], /rw\.data: the output <data> already exists/);
    // With --force the user's existing output is replaced.
    const r = await obd(['export', w.f('monday.lsmt'), w.f('tuesday.lsmt'), '--force']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256File(w.f('monday.lsmt')), await sha256File(L('layer1.lsmt')));
  } finally {
    await w.done();
  }
});

test('an output that is one of the inputs is refused even with --force: same path, symlink, hard link', async () => {
  const w = await workspace();
  try {
    await symlink(w.f('tuesday.lsmt'), w.f('link.lsmt'));
    await link(w.f('tuesday.lsmt'), w.f('hard.lsmt'));
    const input = /is the input .*refusing to overwrite an input, even with --force/;
    await refused(w.dir, ['import', w.f('t.raw'), w.f('tuesday.lsmt'), '--base', w.f('monday.lsmt'), w.f('tuesday.lsmt'), '--force'], /<out> is the input --base layer 2/);
    await refused(w.dir, ['merge', w.f('monday.lsmt'), w.f('tuesday.lsmt'), w.f('link.lsmt'), '--force'], input);
    await refused(w.dir, ['export', w.f('monday.lsmt'), w.f('tuesday.lsmt'), w.f('hard.lsmt'), '--force'], /hard\.lsmt: the output <output> is the input layer 2 \(.*tuesday\.lsmt\)/);
    await refused(w.dir, ['commit', w.f('rw.data'), w.f('rw.index'), w.f('rw.index'), '--force'], /<out> is the input <index>/);
    await refused(w.dir, ['zfile', 'compress', w.f('t.raw'), w.f('t.raw'), '--force'], /<out> is the input <in>/);
    await refused(w.dir, ['zfile', 'decompress', w.f('link.lsmt'), w.f('hard.lsmt'), '--force'], input);
    await refused(w.dir, ['create', w.f('x.data'), w.f('tuesday.lsmt'), '--base', w.f('monday.lsmt'), w.f('tuesday.lsmt'), '--force'], /<index> is the input --base layer 2/);
  } finally {
    await w.done();
  }
});

test('OCI layouts and pull directories: an existing tag or pulled image needs --force, the source is never the target', async () => {
  const w = await workspace();
  try {
    const layout = w.f('images');
    let r = await obd(['push', w.f('monday.lsmt'), w.f('tuesday.lsmt'), `oci:${layout}:v1`]);
    assert.equal(r.code, 0, r.stderr);
    const before = await treeDigest(path.join(layout));
    await refused(w.dir, ['push', w.f('monday.lsmt'), `oci:${layout}:v1`], /already holds an image at the tag "v1" \(give --force/);
    await refused(w.dir, ['copy', `oci:${layout}:v1`, `oci:${layout}:v1`, '--force'], /<dst> is the input <src>/);
    await refused(w.dir, ['pull', `oci:${layout}:v1`, layout, '--force'], /<dir> is the input <ref>/);
    assert.deepEqual(await treeDigest(layout), before, 'index.json unchanged');
    r = await obd(['pull', `oci:${layout}:v1`, w.f('pulled')]);
    assert.equal(r.code, 0, r.stderr);
    await refused(w.dir, ['pull', `oci:${layout}:v1`, w.f('pulled')], /config\.v1\.json: the output <dir> already exists/);
    r = await obd(['copy', `oci:${layout}:v1`, `oci:${layout}:v2`]);
    assert.equal(r.code, 0, r.stderr);
    await refused(w.dir, ['copy', `oci:${layout}:v1`, `oci:${layout}:v2`], /already holds an image at the tag "v2"/);
    r = await obd(['push', w.f('monday.lsmt'), `oci:${layout}:v1`, '--force']);
    assert.equal(r.code, 0, r.stderr);
  } finally {
    await w.done();
  }
});

/** Starts `obd args`, sends `signal` once `ready()` holds, and resolves the exit code. */
async function interrupt(args: string[], ready: () => Promise<boolean>, signal: NodeJS.Signals, stdin?: (c: ChildProcess) => void): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.stdin!.on('error', () => {});
  stdin?.(child);
  let exited = false;
  void exit.then(() => (exited = true));
  while (!exited && !(await ready())) await new Promise((r) => setTimeout(r, 5));
  child.kill(signal);
  const code = await exit;
  child.stdin?.destroy();
  return { code, stderr };
}

test('Ctrl-C or SIGTERM during zfile compress, import -z, merge -z and commit -z removes the temporary output', async () => {
  const w = await workspace();
  try {
    const big = randomBytes(32 << 20);
    await writeFile(w.f('big.raw'), big);
    const layer = await WritableLayer.create(w.f('big.data'), w.f('big.index'), { virtualSize: 32 << 20 });
    await layer.write(big, 0);
    await layer.close();
    let r = await obd(['import', w.f('big.raw'), w.f('big.lsmt')]);
    assert.equal(r.code, 0, r.stderr);
    const before = await treeDigest(w.dir);
    const tmpExists = async () => (await readdir(w.dir)).some((n) => n.includes('.tmp-'));
    const cases: [string[], NodeJS.Signals, ((c: ChildProcess) => void)?][] = [
      // From a pipe kept open, so the command is certainly still running when stopped.
      [['zfile', 'compress', '-', w.f('out.zfile')], 'SIGINT', (c) => c.stdin!.write(R('outputs-stdin', 1 << 20))],
      [['import', w.f('big.raw'), w.f('out.lsmt'), '-z', 'zstd'], 'SIGTERM'],
      [['merge', w.f('big.lsmt'), w.f('out.lsmt'), '-z', 'zstd'], 'SIGINT'],
      [['commit', w.f('big.data'), w.f('big.index'), w.f('out.lsmt'), '-z', 'zstd'], 'SIGTERM'],
    ];
    for (const [args, signal, feed] of cases) {
      const s = await interrupt(args, tmpExists, signal, feed);
      assert.equal(s.code, signal === 'SIGINT' ? 130 : 143, `${args.join(' ')}: ${s.stderr}`);
      assert.match(s.stderr, /temporary output removed/);
      assert.deepEqual(await treeDigest(w.dir), before, `${args.join(' ')}: no output or temporary left, inputs unchanged`);
    }
  } finally {
    await w.done();
  }
});

const peers = missing('nbdinfo');

test('obd serve removes its socket and lock on SIGINT, and when its output pipe closes', { skip: peers.length ? `missing ${peers}` : false }, async () => {
  const w = await workspace();
  try {
    const upper = ['--writable', '--upper', w.f('up.data'), w.f('up.index')];
    const a = await serveJson([w.f('monday.lsmt'), ...upper, '--socket', w.f('a.sock')]);
    assert.ok(existsSync(w.f('a.sock')) && existsSync(w.f('up.data.lock')));
    a.child.kill('SIGINT');
    assert.equal(await a.exited, 0);
    assert.ok(!existsSync(w.f('a.sock')) && !existsSync(w.f('up.data.lock')), 'socket and lock removed on SIGINT');

    // As `obd serve -v 2>&1 | head -1`: the reader of its log has gone; the next log line finds it.
    const b = await serveJson([w.f('monday.lsmt'), ...upper, '--socket', w.f('b.sock'), '-v']);
    b.child.stderr!.destroy();
    const info = spawn('nbdinfo', [`nbd+unix:///?socket=${w.f('b.sock')}`], { stdio: 'ignore' });
    await new Promise((r) => info.once('exit', r));
    assert.equal(await b.exited, 0);
    assert.ok(!existsSync(w.f('b.sock')) && !existsSync(w.f('up.data.lock')), 'socket and lock removed when the pipe closed');
    assert.equal(await sha256File(w.f('monday.lsmt')), await sha256File(L('layer1.lsmt')));
  } finally {
    await w.done();
  }
});
