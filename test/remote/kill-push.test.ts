/**
 * SIGKILL trials of `obd push`, into an OCI layout and to a real registry on 127.0.0.1.
 * Killed anywhere: the layout's index.json is valid JSON naming only complete blobs, every
 * blob under a digest name hashes to it, a tag appears only with the whole image behind it,
 * the compression temp does not outlive the next run, and a rerun ends with the same image as
 * a push never killed. OBD_KILL_TRIALS=N runs N kills per command (default 6).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { RemoteNotFoundError } from '../../src/remote/errors.ts';
import { openRepository } from '../../src/remote/image.ts';
import { parseManifest, sha256Digest } from '../../src/remote/manifest.ts';
import { parseReference } from '../../src/remote/reference.ts';
import { killTrials, type KillTarget } from '../helpers/kill.ts';
import { checkBlobDir, exists, KILL_TIMEOUT, KILLS, killFixture, pushTemps } from './helpers/kill.ts';

describe('SIGKILL trials of push', { concurrency: 1 }, () => {
  const f = killFixture();

  test('obd push oci:DIR:tag: index.json always valid, naming only complete blobs; a rerun succeeds', { timeout: KILL_TIMEOUT }, async (t) => {
    const work = path.join(f.root, 'push-oci');
    const tmp = path.join(work, 'tmp');
    const layout = path.join(work, 'layout');
    await mkdir(tmp, { recursive: true });
    let want = '';
    const target: KillTarget = {
      args: () => ['push', ...f.layers, `oci:${layout}:v1`],
      env: { TMPDIR: tmp },
      watch: [work],
      inputs: f.inputs,
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

  test('obd push to a registry: a tag appears only with every blob complete; a rerun succeeds', { timeout: KILL_TIMEOUT }, async (t) => {
    const work = path.join(f.root, 'push-reg');
    const tmp = path.join(work, 'tmp');
    await mkdir(tmp, { recursive: true });
    const ref = (gen: number) => `${f.reg.host}/kill${gen}/app:v1`;
    let want = '';
    const target: KillTarget = {
      args: (gen) => ['push', ...f.layers, ref(gen)],
      env: { TMPDIR: tmp },
      watch: [work, f.reg.dir],
      inputs: f.inputs,
      async record(gen) {
        const opened = await openRepository(parseReference(ref(gen)));
        want = (await opened.repo.getManifest('v1')).digest;
        await opened.close();
      },
      async check(gen, finished) {
        let partial = await pushTemps(tmp, finished);
        const uploads = path.join(f.reg.dir, 'data', 'docker', 'registry', 'v2', 'repositories', `kill${gen}`, 'app', '_uploads');
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
});
