/**
 * `docker-archive:FILE` (docker save output) as a repository: both layouts Docker writes
 * (legacy `<id>/layer.tar` with shared layers symlinked, Docker 25's `blobs/sha256/…`),
 * choosing an image by tag or position, and refusing archives that are not docker save output.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { openRepository, resolveImage } from '../../src/remote/image.ts';
import { parseReference, formatReference, referenceTarget } from '../../src/remote/reference.ts';
import { InvalidReferenceError, RemoteNotFoundError } from '../../src/remote/errors.ts';
import { ReadOnlyError } from '../../src/io/errors.ts';
import { MemorySource } from '../../src/io/memory.ts';
import { tempDir } from '../helpers/temp.ts';
import { imageConfig, layer, sha256, tarOf, writeDockerArchive, writeTree, type BuiltLayer } from '../helpers/small-images.ts';

async function layers(dir: string): Promise<BuiltLayer[]> {
  await writeTree(path.join(dir, 'a'), { 'etc/hostname': 'box\n', bin: null });
  await writeTree(path.join(dir, 'b'), { 'srv/data.bin': Buffer.alloc(70000, 7) });
  await writeTree(path.join(dir, 'c'), { 'srv/other': 'x' });
  return [layer(tarOf(path.join(dir, 'a')), 'plain'), layer(tarOf(path.join(dir, 'b')), 'plain'), layer(tarOf(path.join(dir, 'c')), 'gzip')];
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

test('docker-archive references: the path ends at the first colon, then NAME[:TAG] or @N', () => {
  assert.deepEqual(parseReference('docker-archive:/tmp/a.tar'), { kind: 'docker-archive', path: '/tmp/a.tar', tag: undefined, digest: undefined });
  assert.deepEqual(parseReference('docker-archive:a.tar:busybox:1.36'), { kind: 'docker-archive', path: 'a.tar', tag: 'busybox:1.36', digest: undefined });
  assert.deepEqual(parseReference('docker-archive:a.tar:localhost:5000/app:v1').tag, 'localhost:5000/app:v1');
  assert.equal(parseReference('docker-archive:a.tar:@2').tag, '@2');
  assert.equal(formatReference(parseReference('docker-archive:a.tar:busybox:1.36')), 'docker-archive:a.tar:busybox:1.36');
  for (const bad of ['docker-archive:', 'docker-archive:a.tar:@x', 'docker-archive:a.tar:Bad Name', `docker-archive:a.tar:app@sha256:${'a'.repeat(64)}`]) {
    assert.throws(() => parseReference(bad), InvalidReferenceError, bad);
  }
});

for (const legacy of [true, false]) {
  test(`docker save output (${legacy ? 'legacy <id>/layer.tar, shared layer symlinked' : 'Docker 25 blobs/sha256'}): manifests, configs and layers read in place`, async (t) => {
    const dir = await tempDir(t);
    const [a, b, c] = await layers(dir);
    const file = path.join(dir, 'saved.tar');
    const one = { layers: [a!, b!], tags: ['example.com/one:v1'] };
    const two = { layers: [c!, a!], tags: ['two:latest', 'two:v2'] };
    await writeDockerArchive(path.join(dir, 'stage'), file, [one, two], legacy);
    if (legacy) assert.match(execFileSync('tar', ['-tvf', file], { encoding: 'utf8' }), /layer\.tar -> \.\.\//, 'the shared layer is a symlink in the archive');

    const { repo, close } = await openRepository(parseReference(`docker-archive:${file}:example.com/one:v1`));
    try {
      assert.equal(repo.kind, 'archive');
      const img = await resolveImage(repo, 'example.com/one:v1');
      assert.equal(img.raw.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
      assert.deepEqual(img.manifest.layers.map((l) => [l.digest, l.size, l.mediaType]), [
        [a!.digest, a!.blob.length, 'application/vnd.docker.image.rootfs.diff.tar'],
        [b!.digest, b!.blob.length, 'application/vnd.docker.image.rootfs.diff.tar'],
      ]);
      const config = imageConfig(one.layers);
      assert.equal(img.manifest.config.digest, sha256(config));
      assert.deepEqual(await collect(repo.streamBlob(img.manifest.config.digest)), config);
      const src = await repo.openBlob(b!.digest, b!.blob.length);
      const buf = new Uint8Array(100);
      await src.read(buf, 1000);
      assert.deepEqual(Buffer.from(buf), b!.blob.subarray(1000, 1100));
      await src.close();
      assert.deepEqual(await collect(repo.streamBlob(a!.digest, 10)), a!.blob.subarray(10));

      // By another tag, by name with latest implied, by position, and by the offered digest.
      const byTag = await resolveImage(repo, 'two:v2');
      assert.deepEqual(byTag.manifest.layers.map((l) => l.mediaType), ['application/vnd.docker.image.rootfs.diff.tar.gzip', 'application/vnd.docker.image.rootfs.diff.tar']);
      assert.equal(byTag.manifest.layers[0]!.digest, c!.digest, 'a compressed layer is addressed by its own digest');
      assert.deepEqual(await collect(repo.streamBlob(byTag.manifest.layers[1]!.digest)), a!.blob);
      assert.deepEqual(await collect(repo.streamBlob(c!.digest)), c!.blob);
      assert.equal((await resolveImage(repo, 'two')).digest, byTag.digest);
      assert.equal((await resolveImage(repo, '@1')).digest, byTag.digest);
      assert.equal((await resolveImage(repo, byTag.digest)).digest, byTag.digest);
      await assert.rejects(resolveImage(repo, 'latest'), (e: Error) => e instanceof RemoteNotFoundError && /example\.com\/one:v1; two:latest, two:v2/.test(e.message));
      await assert.rejects(resolveImage(repo, 'three:v1'), RemoteNotFoundError);
      await assert.rejects(repo.openBlob(sha256('absent')), RemoteNotFoundError);
      assert.throws(() => repo.putBlob(a!.digest, new MemorySource(new Uint8Array(1))), ReadOnlyError);
    } finally {
      await close();
    }
  });
}

test('an archive of one image needs no name; writing one is refused', async (t) => {
  const dir = await tempDir(t);
  const [a] = await layers(dir);
  const file = path.join(dir, 'one.tar');
  await writeDockerArchive(path.join(dir, 'stage'), file, [{ layers: [a!], tags: [] }], true);
  const r = parseReference(`docker-archive:${file}`);
  const { repo, close } = await openRepository(r);
  try {
    const img = await resolveImage(repo, referenceTarget(r));
    assert.deepEqual(img.manifest.layers.map((l) => l.digest), [a!.digest]);
  } finally {
    await close();
  }
  await assert.rejects(openRepository(r, {}, true), InvalidReferenceError);
});

test('a tar that is not docker save output, and one whose manifest.json names missing files, are refused', async (t) => {
  const dir = await tempDir(t);
  await writeTree(path.join(dir, 'x'), { 'hello.txt': 'hi' });
  const plain = path.join(dir, 'plain.tar');
  await writeFile(plain, tarOf(path.join(dir, 'x')));
  await assert.rejects(openRepository(parseReference(`docker-archive:${plain}`)), (e: Error) => e instanceof InvalidReferenceError && /manifest\.json/.test(e.message));
  await writeTree(path.join(dir, 'y'), { 'manifest.json': JSON.stringify([{ Config: 'c.json', RepoTags: [], Layers: ['l/layer.tar'] }]) });
  const broken = path.join(dir, 'broken.tar');
  await writeFile(broken, tarOf(path.join(dir, 'y')));
  await assert.rejects(openRepository(parseReference(`docker-archive:${broken}`)), (e: Error) => e instanceof InvalidReferenceError && /c\.json/.test(e.message));
  await assert.rejects(openRepository(parseReference(`docker-archive:${path.join(dir, 'none.tar')}`)), RemoteNotFoundError);
});
