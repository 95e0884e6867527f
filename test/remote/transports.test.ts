/**
 * References in the transports skopeo users type, and layer blobs other tools made: through
 * the real CLI, a real registry on 127.0.0.1 and real skopeo.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DIGESTS, FIXTURES, sha256 } from '../helpers/recipes.ts';
import { MAIN, obd, serveJson, treeDigest } from '../helpers/cli.ts';
import { must, run } from '../nbd/helpers/run.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { tempDir } from '../helpers/temp.ts';

const L = (n: string) => path.join(FIXTURES, 'lsmt', n);

function skopeo(...args: string[]): Promise<string> {
  return must('skopeo', ['--insecure-policy', ...args]);
}

async function nbdSha(uri: string): Promise<string> {
  return (await must('bash', ['-c', `nbdcopy '${uri}' - | sha256sum`])).split(' ')[0]!;
}

describe('references and blobs other tools made', { concurrency: true }, () => {
  let reg: RunningRegistry;
  let img: string;
  before(async () => {
    reg = await startRegistry();
    img = `docker://${reg.host}/t/img:v1`;
    const r = await obd(['push', L('layer1.lsmt'), L('layer2.lsmt'), img]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(() => reg.stop());

  test('a layer skopeo gzipped into oci: is refused, naming the cause and --preserve-digests', async (t) => {
    const dir = await tempDir(t);
    await skopeo('copy', '--src-tls-verify=false', img, `oci:${dir}/gz:v1`);
    const before = await treeDigest(dir);
    const r = await obd(['serve', '--json', `oci:${dir}/gz:v1`, '--socket', path.join(dir, 's.sock')]);
    assert.equal(r.code, 1, r.stderr);
    const { error } = JSON.parse(r.stdout);
    assert.equal(error.type, 'RecompressedLayerError');
    assert.match(error.message, /gzip-compressed tar.*skopeo copy --preserve-digests/);
    assert.deepEqual(await treeDigest(dir), before);
  });

  test('a zstd-recompressed layer is refused too, and inspect names it', async (t) => {
    const dir = await tempDir(t);
    await skopeo('copy', '--src-tls-verify=false', '--dest-compress-format', 'zstd', img, `oci:${dir}/zst:v1`);
    const seen = await obd(['inspect', `oci:${dir}/zst:v1`]);
    assert.equal(seen.code, 0, seen.stderr);
    assert.match(seen.stdout, /layer 0 .*tar\+zstd \(a compressed stream, not servable\)/);
    const r = await obd(['serve', `oci:${dir}/zst:v1`, '--socket', path.join(dir, 's.sock')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /zstd-compressed tar/);
  });

  test('skopeo copy --preserve-digests keeps the image servable', async (t) => {
    const dir = await tempDir(t);
    await skopeo('copy', '--src-tls-verify=false', '--preserve-digests', img, `oci:${dir}/kept:v1`);
    const s = await serveJson([`oci:${dir}/kept:v1`, '--socket', path.join(dir, 's.sock')]);
    try {
      assert.equal(await nbdSha(s.ready.exports[0]!.uri), DIGESTS.layer12);
    } finally {
      assert.equal(await s.stop(), 0);
    }
  });

  test('docker:// references push and inspect; inspect --raw prints the manifest byte for byte', async () => {
    const ref = `docker://${reg.host}/t/raw:v1`;
    const pushed = await obd(['push', '--json', L('layer1.lsmt'), ref]);
    assert.equal(pushed.code, 0, pushed.stderr);
    const raw = await run('bash', ['-c', `'${process.execPath}' '${MAIN}' inspect --raw '${ref}' | sha256sum`]);
    assert.equal(raw.code, 0, raw.stderr);
    assert.equal(`sha256:${raw.stdout.split(' ')[0]}`, JSON.parse(pushed.stdout).digest);
    const theirs = await skopeo('inspect', '--raw', '--tls-verify=false', ref);
    const ours = await obd(['inspect', '--raw', ref]);
    assert.equal(ours.stdout, theirs);
  });

  test('oci-archive: obd writes what skopeo reads, and serves what skopeo wrote, leaving it unchanged', async (t) => {
    const dir = await tempDir(t);
    const ours = path.join(dir, 'ours.tar');
    const c = await obd(['copy', img, `oci-archive:${ours}:v1`]);
    assert.equal(c.code, 0, c.stderr);
    const viaSkopeo = await skopeo('inspect', '--raw', `oci-archive:${ours}:v1`);
    assert.equal(viaSkopeo, (await obd(['inspect', '--raw', img])).stdout);

    const theirs = path.join(dir, 'theirs.tar');
    await skopeo('copy', '--src-tls-verify=false', '--preserve-digests', img, `oci-archive:${theirs}:v1`);
    const before = sha256(await readFile(theirs));
    const s = await serveJson([`oci-archive:${theirs}:v1`, '--socket', path.join(dir, 's.sock')]);
    try {
      assert.equal(await nbdSha(s.ready.exports[0]!.uri), DIGESTS.layer12);
    } finally {
      assert.equal(await s.stop(), 0);
    }
    assert.equal(sha256(await readFile(theirs)), before);

    const more = await obd(['push', L('layer1.lsmt'), `oci-archive:${ours}:second`]);
    assert.equal(more.code, 0, more.stderr);
    assert.match(await skopeo('inspect', '--raw', `oci-archive:${ours}:second`), /overlaybd/);
    assert.equal(await skopeo('inspect', '--raw', `oci-archive:${ours}:v1`), viaSkopeo, 'the first tag survives');
    assert.deepEqual((await readdir(dir)).sort(), ['ours.tar', 'theirs.tar'], 'no staging left');
  });

  test('a bare path to an OCI layout is an image; a path that is not one is an error', async (t) => {
    const dir = await tempDir(t);
    assert.equal((await obd(['push', L('layer1.lsmt'), `oci:${dir}/lay:v1`])).code, 0);
    for (const ref of [`${dir}/lay`, `${dir}/lay:v1`]) {
      const r = await obd(['inspect', '--json', ref]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).reference, `oci:${dir}/lay${ref.endsWith(':v1') ? ':v1' : ''}`);
    }
    const none = await obd(['inspect', `${dir}/nolayout`]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /not an OCI image layout .*write oci:/);
  });

  test('unknown transports are refused, never looked up on Docker Hub', async () => {
    for (const ref of ['foo://x/y', 'ftp:host/img', 'dir:/tmp/x', 'http://127.0.0.1:1/r:v1']) {
      const r = await obd(['inspect', ref]);
      assert.equal(r.code, 1, ref);
      assert.match(r.stderr, /transport/, ref);
    }
    const served = await obd(['serve', 'ftp://host/img']);
    assert.equal(served.code, 1);
    assert.match(served.stderr, /unknown transport "ftp:\/\/"/);
  });

  test('a reference without a tag means latest in push, copy, pull and inspect', async (t) => {
    const dir = await tempDir(t);
    const pushed = await obd(['push', '--json', L('layer1.lsmt'), `oci:${dir}/nt`]);
    assert.equal(pushed.code, 0, pushed.stderr);
    const digest = JSON.parse(pushed.stdout).digest;
    const index = JSON.parse(await readFile(path.join(dir, 'nt', 'index.json'), 'utf8'));
    assert.equal(index.manifests[0].annotations['org.opencontainers.image.ref.name'], 'latest');
    assert.equal((await obd(['copy', `oci:${dir}/nt`, `docker://${reg.host}/t/nt`])).code, 0);
    const inspected = await obd(['inspect', '--json', `${reg.host}/t/nt:latest`]);
    assert.equal(JSON.parse(inspected.stdout).digest, digest);
    const pulled = await obd(['pull', '--json', `docker://${reg.host}/t/nt`, path.join(dir, 'p')]);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal(JSON.parse(pulled.stdout).digest, digest);
  });

  test('a failed copy or push leaves no layout behind, and an existing folder as it was', async (t) => {
    const dir = await tempDir(t);
    const a = await obd(['copy', `oci:${dir}/missing:v1`, `oci:${dir}/new`]);
    assert.equal(a.code, 1);
    const b = await obd(['copy', `docker://${reg.host}/t/nope:v1`, `oci:${dir}/new2`]);
    assert.equal(b.code, 1);
    await mkdir(path.join(dir, 'mine'));
    await writeFile(path.join(dir, 'mine', 'notes.txt'), 'keep');
    const c = await obd(['push', path.join(FIXTURES, 'MANIFEST.md'), `oci:${dir}/mine`]);
    assert.equal(c.code, 1);
    assert.match(c.stderr, /not an overlaybd layer/);
    assert.deepEqual((await readdir(dir)).sort(), ['mine']);
    assert.deepEqual(await readdir(path.join(dir, 'mine')), ['notes.txt']);
  });
});
