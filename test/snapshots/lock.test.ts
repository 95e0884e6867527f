/** One writer at a time: a writable layer open for writing cannot be opened again, committed or replaced. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { commitLayer } from '../../src/lsmt/commit.ts';
import { obd } from '../helpers/cli.ts';
import { tempDir } from '../helpers/temp.ts';

const SRC = path.join(import.meta.dirname, '..', '..', 'src', 'lsmt', 'writable.ts');

test('a layer open for writing in this process refuses a second writer and a commit; closing frees it', async (t) => {
  const dir = await tempDir(t, 'obd-lock-');
  const data = path.join(dir, 'rw.data');
  const index = path.join(dir, 'rw.index');
  const l = await WritableLayer.create(data, index, { virtualSize: 1 << 20 });
  await l.write(new Uint8Array(4096).fill(7), 0);
  await assert.rejects(WritableLayer.open(data, index), { name: 'BusyError', message: /open for writing by process \d+ \(this one\)/ });
  await assert.rejects(commitLayer(data, index, path.join(dir, 'out.lsmt')), { name: 'BusyError', message: /cannot read it/ });
  await assert.rejects(WritableLayer.create(data, index, { virtualSize: 1 << 20, overwrite: true }), { name: 'BusyError' });
  const inspect = await WritableLayer.open(data, index, { readOnly: true, allowWriter: true });
  await inspect.close();
  await l.close();
  await assert.rejects(stat(`${data}.lock`), { code: 'ENOENT' });
  const stats = await commitLayer(data, index, path.join(dir, 'out.lsmt'));
  assert.equal(stats.entries, 1);
});

test('a writer in another process blocks commit until it exits; a SIGKILLed writer leaves a stale lock that is taken over', async (t) => {
  const dir = await tempDir(t, 'obd-lock-');
  const data = path.join(dir, 'rw.data');
  const index = path.join(dir, 'rw.index');
  const script = `
    const { WritableLayer } = await import(${JSON.stringify(SRC)});
    const l = await WritableLayer.create(${JSON.stringify(data)}, ${JSON.stringify(index)}, { virtualSize: 1 << 20 });
    await l.write(new Uint8Array(8192).fill(9), 4096);
    await l.flush();
    process.stdout.write('ready\\n');
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d) => String(d).includes('ready') && resolve());
    child.on('exit', (code) => reject(new Error(`writer exited ${code}`)));
  });
  const r = await obd(['commit', data, index, path.join(dir, 'out.lsmt')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`open for writing by process ${child.pid}; cannot read it`));
  const info = await obd(['rw-info', '--json', data, index]);
  assert.equal(info.code, 0, info.stderr);
  assert.equal(JSON.parse(info.stdout).openForWritingBy, child.pid);

  const exited = new Promise((res) => child.on('exit', res));
  child.kill('SIGKILL');
  await exited;
  await stat(`${data}.lock`); // stale lock still on disk
  const l = await WritableLayer.open(data, index);
  const buf = new Uint8Array(8192);
  await l.read(buf, 4096);
  assert.ok(buf.every((b) => b === 9), 'flushed data survived');
  await l.close();
  const c = await obd(['commit', '--json', data, index, path.join(dir, 'out.lsmt')]);
  assert.equal(c.code, 0, c.stderr);
});
