/**
 * SIGKILL trials of `obd pull` from a real registry on 127.0.0.1 into a directory. Killed
 * anywhere: every blob under a digest name hashes to it, manifest.json and config.v1.json
 * appear only whole (config.v1.json last, with every layer there), and a rerun resumes the
 * partial downloads to the same image as a pull never killed. OBD_KILL_TRIALS=N runs N kills
 * (default 6).
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { openRepository } from '../../src/remote/image.ts';
import { parseManifest } from '../../src/remote/manifest.ts';
import { parseReference } from '../../src/remote/reference.ts';
import { obd } from '../helpers/cli.ts';
import { killTrials, runObd, type KillTarget } from '../helpers/kill.ts';
import { checkBlobDir, exists, KILL_TIMEOUT, KILLS, killFixture, startThrottle } from './helpers/kill.ts';

describe('SIGKILL trials of pull', { concurrency: 1 }, () => {
  const f = killFixture();
  before(async () => {
    const pushed = await obd(['push', ...f.layers, `${f.reg.host}/kill-src/app:v1`]);
    assert.equal(pushed.code, 0, pushed.stderr);
  });

  test('obd pull to a directory: files appear only complete, resumed downloads hash right; a rerun succeeds', { timeout: KILL_TIMEOUT }, async (t) => {
    const slow = await startThrottle(f.reg.port, 12 << 20);
    t.after(() => slow.stop());
    const ref = `${slow.host}/kill-src/app:v1`;
    const work = path.join(f.root, 'pull');
    const dir = path.join(work, 'image');
    // The directories exist from the start so the watcher sees every write in them (one that
    // pull creates is watched only some moments later), and kills land where they aim.
    const blobDir = path.join(dir, 'blobs', 'sha256');
    await mkdir(blobDir, { recursive: true });
    const want: Record<string, Buffer> = {};
    let resumed = 0;
    const target: KillTarget = {
      args: () => ['pull', ref, dir],
      watch: [work],
      inputs: f.inputs,
      async record() {
        for (const name of ['manifest.json', 'config.v1.json']) want[name] = await readFile(path.join(dir, name));
      },
      async check(_gen, finished) {
        const { blobs, temps } = await checkBlobDir(blobDir, /^[0-9a-f]{64}\.download$/);
        for (const n of temps) if ((await stat(path.join(blobDir, n))).size > 0) resumed++;
        for (const n of await readdir(dir).catch(() => [])) {
          assert.match(n, /^(blobs|(manifest|config\.v1)\.json(\.tmp-\d+-[0-9a-f]+)?)$/, `unexpected ${dir}/${n}`);
          if (n.includes('.tmp-')) temps.push(n);
          else if (n !== 'blobs') assert.ok((await readFile(path.join(dir, n))).equals(want[n]!), `${n} differs from an unkilled pull's`);
        }
        const complete = await exists(path.join(dir, 'config.v1.json'));
        if (complete) {
          for (const l of JSON.parse(want['config.v1.json']!.toString()).lowers) assert.ok(blobs.has(l.digest), `config.v1.json names ${l.digest}, which is not complete`);
        }
        if (finished) {
          assert.ok(complete, 'a finished pull wrote no config.v1.json');
          assert.deepEqual(temps, [], 'a finished pull left partial files');
        }
        return { complete, partial: temps.length > 0 || (!complete && blobs.size > 0) };
      },
      async reset() {
        await rm(dir, { recursive: true });
        await mkdir(blobDir, { recursive: true });
      },
    };
    const s = await killTrials(target, KILLS, 2003);
    t.diagnostic(JSON.stringify({ ...s, resumed }));
    assert.ok(s.partial >= KILLS / 3, `only ${s.partial} of ${KILLS} kills interrupted a write (${JSON.stringify(s)})`);
  });

  test('a pull killed mid-download resumes from its partial files and gets the right digests', { timeout: KILL_TIMEOUT }, async (t) => {
    const slow = await startThrottle(f.reg.port, 4 << 20);
    t.after(() => slow.stop());
    const ref = `${slow.host}/kill-src/app:v1`;
    const work = path.join(f.root, 'resume');
    const dir = path.join(work, 'image');
    const blobDir = path.join(dir, 'blobs', 'sha256');
    await mkdir(blobDir, { recursive: true });
    const opened = await openRepository(parseReference(ref));
    const image = parseManifest(await opened.repo.getManifest('v1'), ref);
    await opened.close();
    const sizes = new Map([image.config, ...image.layers].map((d) => [d.digest.slice(7), d.size]));
    // Killed once some download has part of its blob on disk.
    const partial = () =>
      readdirSync(blobDir).flatMap((n) => {
        const have = n.endsWith('.download') ? (statSync(path.join(blobDir, n), { throwIfNoEntry: false })?.size ?? 0) : 0;
        return have > 0 && have < sizes.get(n.slice(0, 64))! ? [have] : [];
      });
    const killed = await runObd({ args: () => ['pull', ref, dir], watch: [work] }, 0, { when: () => partial().length > 0 });
    assert.equal(killed.finished, false, 'the pull ended before any download was part-way');
    const left = partial();
    assert.ok(left.length > 0);
    const again = await obd(['pull', '--json', ref, dir]);
    assert.equal(again.code, 0, again.stderr);
    const { blobs, temps } = await checkBlobDir(blobDir, /^$/);
    assert.deepEqual(temps, []);
    const pulled = JSON.parse(again.stdout);
    for (const l of pulled.layers) assert.ok(blobs.has(l.digest), `layer ${l.digest} missing after the resumed pull`);
    for (const n of left) assert.ok(slow.ranges.includes(n), `the rerun did not resume the ${n} bytes already on disk (ranges asked: ${slow.ranges.join(', ')})`);
  });
});
