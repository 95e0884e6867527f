/**
 * SIGKILL trials of `obd push` (into an OCI layout, and to a real registry on 127.0.0.1) and
 * `obd pull` (registry → directory). Killed anywhere: a layout's index.json is valid JSON
 * naming only complete blobs, every blob under a digest name hashes to it, a tag appears only
 * with the whole image behind it, a pull directory shows config.v1.json only when all is
 * there, the compression temp of a push does not outlive the next run, and a rerun (resuming
 * partial downloads) ends with the same image as a run never killed. OBD_KILL_TRIALS=N runs
 * N kills per command (default 8).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { commitLayer } from '../../src/lsmt/commit.ts';
import { RemoteNotFoundError } from '../../src/remote/errors.ts';
import { openRepository } from '../../src/remote/image.ts';
import { parseManifest, sha256Digest } from '../../src/remote/manifest.ts';
import { parseReference } from '../../src/remote/reference.ts';
import { obd } from '../helpers/cli.ts';
import { killTrials, scatteredWritable, sha256File, type KillTarget } from '../helpers/kill.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';

const KILLS = Number(process.env.OBD_KILL_TRIALS) || 8;
const UUID = ['0b6f54f1-3a51-4d7e-8f1c-6d2b9e0c7a01', '0b6f54f1-3a51-4d7e-8f1c-6d2b9e0c7a02'];

const exists = (p: string) => stat(p).then(() => true, () => false);

/**
 * Files of a blobs/sha256 directory: every digest-named blob must hash to its name; others
 * must be the temps `allowed` matches. Resolves the complete blobs and the temps.
 */
async function checkBlobDir(dir: string, allowed: RegExp): Promise<{ blobs: Set<string>; temps: string[] }> {
  const blobs = new Set<string>();
  const temps: string[] = [];
  for (const name of await readdir(dir).catch(() => [])) {
    if (/^[0-9a-f]{64}$/.test(name)) {
      assert.equal(await sha256File(path.join(dir, name)), `sha256:${name}`, `${dir}/${name} does not hash to its name`);
      blobs.add(`sha256:${name}`);
    } else {
      assert.match(name, allowed, `unexpected file ${dir}/${name}`);
      temps.push(name);
    }
  }
  return { blobs, temps };
}

/** Temps a push left in its TMPDIR (compressed layers waiting for upload). */
async function pushTemps(tmp: string, finished: boolean): Promise<boolean> {
  const names = await readdir(tmp);
  for (const n of names) assert.match(n, /^obd-push\.tmp-\d+-[0-9a-f]+$/, `unexpected ${tmp}/${n}`);
  if (finished) assert.deepEqual(names, [], 'a finished push left its temporary directory');
  return names.length > 0;
}

describe('SIGKILL trials of push and pull', { concurrency: 1 }, () => {
  let root: string;
  let reg: RunningRegistry;
  let layers: string[];
  const I = (name: string) => path.join(root, 'in', name);
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'obd-kill-remote-'));
    await mkdir(path.join(root, 'in'));
    for (let k = 0; k < 2; k++) {
      await scatteredWritable(I(`l${k}.data`), I(`l${k}.index`), `push-l${k}`, UUID[k]!, k ? UUID[k - 1] : undefined, 150);
      await commitLayer(I(`l${k}.data`), I(`l${k}.index`), I(`l${k}.lsmt`), { uuid: UUID[k] });
      await rm(I(`l${k}.data`));
      await rm(I(`l${k}.index`));
    }
    // A bare zfile too: push wraps it in tar instead of compressing.
    const z = await obd(['zfile', 'compress', I('l1.lsmt'), I('l2.zfile')]);
    assert.equal(z.code, 0, z.stderr);
    layers = [I('l0.lsmt'), I('l1.lsmt'), I('l2.zfile')];
    reg = await startRegistry();
  });
  after(async () => {
    await reg?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('obd push oci:DIR:tag: index.json always valid, naming only complete blobs; a rerun succeeds', { timeout: 120_000 * Math.max(1, KILLS / 8) }, async (t) => {
    const work = path.join(root, 'push-oci');
    const tmp = path.join(work, 'tmp');
    const layout = path.join(work, 'layout');
    await mkdir(tmp, { recursive: true });
    let want = '';
    const target: KillTarget = {
      args: () => ['push', ...layers, `oci:${layout}:v1`],
      env: { TMPDIR: tmp },
      watch: [work],
      inputs: [path.join(root, 'in'), ...layers],
      async record() {
        want = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')).manifests[0].digest;
      },
      async check(_gen, finished) {
        let partial = await pushTemps(tmp, finished);
        const { blobs, temps } = await checkBlobDir(path.join(layout, 'blobs', 'sha256'), /^[0-9a-f]{64}\.tmp-\d+-[0-9a-f]+$/);
        for (const n of await readdir(layout).catch(() => [])) {
          assert.match(n, /^(oci-layout|index\.json|blobs|(oci-layout|index\.json)\.tmp-\d+-[0-9a-f]+)$/, `unexpected ${layout}/${n}`);
          if (n.includes('.tmp-')) temps.push(n);
        }
        if (await exists(path.join(layout, 'oci-layout'))) {
          assert.equal(typeof JSON.parse(await readFile(path.join(layout, 'oci-layout'), 'utf8')).imageLayoutVersion, 'string');
        }
        let complete = false;
        if (await exists(path.join(layout, 'index.json'))) {
          const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8'));
          for (const d of index.manifests) {
            assert.ok(blobs.has(d.digest), `index.json names manifest ${d.digest}, which is not a complete blob`);
            const bytes = await readFile(path.join(layout, 'blobs', 'sha256', d.digest.slice(7)));
            const m = parseManifest({ bytes, digest: sha256Digest(bytes), mediaType: d.mediaType }, layout);
            for (const b of [m.config, ...m.layers]) assert.ok(blobs.has(b.digest), `manifest ${d.digest} names ${b.digest}, which is not a complete blob`);
            if (d.annotations?.['org.opencontainers.image.ref.name'] === 'v1') {
              assert.equal(d.digest, want, 'tag v1 names another image than an unkilled push');
              complete = true;
            }
          }
        }
        if (finished) {
          assert.ok(complete, 'a finished push did not tag the image');
          assert.deepEqual(temps, [], 'a finished push left temporary files in the layout');
        }
        partial ||= temps.length > 0 || (!complete && blobs.size > 0);
        return { complete, partial };
      },
      async reset() {
        await rm(layout, { recursive: true });
      },
    };
    const s = await killTrials(target, KILLS, 2001);
    t.diagnostic(JSON.stringify(s));
    assert.ok(s.partial >= KILLS / 3, `only ${s.partial} of ${KILLS} kills interrupted a write (${JSON.stringify(s)})`);
  });

  test('obd push to a registry: a tag appears only with every blob complete; a rerun succeeds', { timeout: 120_000 * Math.max(1, KILLS / 8) }, async (t) => {
    const work = path.join(root, 'push-reg');
    const tmp = path.join(work, 'tmp');
    await mkdir(tmp, { recursive: true });
    const ref = (gen: number) => `${reg.host}/kill${gen}/app:v1`;
    let want = '';
    const target: KillTarget = {
      args: (gen) => ['push', ...layers, ref(gen)],
      env: { TMPDIR: tmp },
      watch: [work, reg.dir],
      inputs: [path.join(root, 'in'), ...layers],
      async record(gen) {
        const opened = await openRepository(parseReference(ref(gen)));
        want = (await opened.repo.getManifest('v1')).digest;
        await opened.close();
      },
      async check(gen, finished) {
        let partial = await pushTemps(tmp, finished);
        const uploads = path.join(reg.dir, 'data', 'docker', 'registry', 'v2', 'repositories', `kill${gen}`, 'app', '_uploads');
        partial ||= (await readdir(uploads).catch(() => [])).length > 0;
        const opened = await openRepository(parseReference(ref(gen)));
        try {
          let m;
          try {
            m = await opened.repo.getManifest('v1');
          } catch (e) {
            if (!(e instanceof RemoteNotFoundError)) throw e;
            assert.ok(!finished, 'a finished push left no tag');
            return { complete: false, partial };
          }
          assert.equal(m.digest, want, 'the tag names another image than an unkilled push');
          const image = parseManifest(m, ref(gen));
          for (const d of [image.config, ...image.layers]) {
            const chunks: Uint8Array[] = [];
            for await (const c of opened.repo.streamBlob(d.digest)) chunks.push(c);
            assert.equal(sha256Digest(Buffer.concat(chunks)), d.digest, `blob ${d.digest} behind the tag is not complete`);
          }
          return { complete: true, partial };
        } finally {
          await opened.close();
        }
      },
      async reset() {},
    };
    const s = await killTrials(target, KILLS, 2002);
    t.diagnostic(JSON.stringify(s));
    assert.ok(s.partial >= KILLS / 3, `only ${s.partial} of ${KILLS} kills interrupted a write (${JSON.stringify(s)})`);
  });

  test('obd pull to a directory: files appear only complete, resumed downloads hash right; a rerun succeeds', { timeout: 120_000 * Math.max(1, KILLS / 8) }, async (t) => {
    const ref = `${reg.host}/kill-src/app:v1`;
    const pushed = await obd(['push', ...layers, ref]);
    assert.equal(pushed.code, 0, pushed.stderr);
    const work = path.join(root, 'pull');
    const dir = path.join(work, 'image');
    await mkdir(work);
    const want: Record<string, Buffer> = {};
    let resumed = 0;
    const target: KillTarget = {
      args: () => ['pull', ref, dir],
      watch: [work],
      inputs: [path.join(root, 'in'), ...layers],
      async record() {
        for (const f of ['manifest.json', 'config.v1.json']) want[f] = await readFile(path.join(dir, f));
      },
      async check(_gen, finished) {
        const { blobs, temps } = await checkBlobDir(path.join(dir, 'blobs', 'sha256'), /^[0-9a-f]{64}\.download$/);
        for (const n of temps) if ((await stat(path.join(dir, 'blobs', 'sha256', n))).size > 0) resumed++;
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
        return { complete, partial: temps.length > 0 };
      },
      async reset() {
        await rm(dir, { recursive: true });
      },
    };
    const s = await killTrials(target, KILLS, 2003);
    t.diagnostic(JSON.stringify({ ...s, resumed }));
    assert.ok(s.partial >= KILLS / 3, `only ${s.partial} of ${KILLS} kills interrupted a write (${JSON.stringify(s)})`);
    assert.ok(resumed > 0, 'no rerun had a partial download to resume');
  });
});
