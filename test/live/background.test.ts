/**
 * A snapshot's commit, compression and hashing run on low-priority worker threads of the
 * server; those threads must not keep `obd serve` alive once it is told to stop.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { obd } from '../helpers/cli.ts';
import { tempDir } from '../helpers/temp.ts';
import { startRegistry } from '../remote/helpers/registry.ts';
import { baseLayer, connect, mustFlush, mustWrite, pattern, serveLive } from './helpers.ts';

/** Nice values of the threads of process `pid`. */
async function threadNices(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => undefined);
    // Fields after the parenthesised command name: state is field 3, nice field 19.
    if (stat) out.push(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]));
  }
  return out;
}

describe('live snapshot in the background', { timeout: 120_000 }, () => {
  it('compresses and hashes on nice-19 worker threads, and obd serve --control still exits on SIGTERM', async (t) => {
    const dir = await tempDir(t, 'obd-live-bg-');
    const reg = await startRegistry();
    t.after(() => reg.stop());
    const { layer } = await baseLayer(dir);
    const live = await serveLive(dir, [layer]);
    let stopped = false;
    t.after(async () => {
      if (!stopped) live.serve.child.kill('SIGKILL');
    });
    assert.ok(!(await threadNices(live.serve.pid)).includes(19), 'no background thread before a snapshot');
    const c = await connect(live.socket);
    await mustWrite(c, 0, pattern('bg', 4 << 20));
    await mustFlush(c);
    const s = await obd(['snapshot', '--control', live.control, '--push', `${reg.host}/disks/bg:s1`, '--json']);
    assert.equal(s.code, 0, s.stderr + s.stdout);
    assert.equal(JSON.parse(s.stdout).push.layersUploaded, 2);
    assert.ok((await threadNices(live.serve.pid)).includes(19), 'the commit ran on the low-priority snapshot thread');
    c.disconnect();
    const t0 = performance.now();
    const code = await Promise.race([live.serve.stop(), new Promise<string>((r) => setTimeout(() => r('still running 10 s after SIGTERM'), 10_000).unref())]);
    stopped = code !== 'still running 10 s after SIGTERM';
    assert.equal(code, 0, live.serve.stderr());
    assert.ok(performance.now() - t0 < 10_000);
  });

  it('a restart removes the empty new-upper pair a crash in the switch left unrecorded, and nothing else', async (t) => {
    const dir = await tempDir(t, 'obd-live-tidy-');
    const { layer } = await baseLayer(dir);
    let live = await serveLive(dir, [layer]);
    const c = await connect(live.socket);
    await mustWrite(c, 0, pattern('t1', 64 << 10));
    await mustFlush(c);
    c.disconnect();
    assert.equal(await live.serve.stop(), 0, live.serve.stderr());
    // What a snapshot's step 1 makes before the record names it.
    const orphan = await WritableLayer.create(path.join(dir, 'upper-0badc0de.data'), path.join(dir, 'upper-0badc0de.index'), { virtualSize: 8 << 20 });
    await orphan.close();
    // Same pattern but written to: not a fresh pair, so kept.
    const used = await WritableLayer.create(path.join(dir, 'upper-0000beef.data'), path.join(dir, 'upper-0000beef.index'), { virtualSize: 8 << 20 });
    await used.write(pattern('kept', 8192), 0);
    await used.flush();
    await used.close();
    await writeFile(path.join(dir, 'upper-notes.data'), '');
    live = await serveLive(dir, [layer]);
    try {
      assert.ok(!existsSync(path.join(dir, 'upper-0badc0de.data')) && !existsSync(path.join(dir, 'upper-0badc0de.index')), 'the unrecorded empty pair is gone');
      for (const f of ['upper-0000beef.data', 'upper-0000beef.index', 'upper-notes.data', 'rw.data', 'rw.index']) assert.ok(existsSync(path.join(dir, f)), `${f} kept`);
    } finally {
      await live.serve.stop();
    }
  });
});
