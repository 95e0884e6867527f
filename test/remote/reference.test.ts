import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatReference, isLoopbackHost, parseReference, referenceTarget } from '../../src/remote/reference.ts';
import { InvalidReferenceError } from '../../src/remote/errors.ts';

const D = 'sha256:' + 'ab'.repeat(32);

test('registry references: host, port, nested repo, tag, digest', () => {
  assert.deepEqual(parseReference('127.0.0.1:5000/team/app:v1'), { kind: 'registry', registry: '127.0.0.1:5000', host: '127.0.0.1:5000', repository: 'team/app', tag: 'v1', digest: undefined });
  assert.deepEqual(parseReference(`localhost/app@${D}`), { kind: 'registry', registry: 'localhost', host: 'localhost', repository: 'app', tag: undefined, digest: D });
  const both = parseReference(`reg.example.com/a/b/c:t@${D}`);
  assert.equal(both.kind === 'registry' && both.repository, 'a/b/c');
  assert.equal(referenceTarget(both), D);
  assert.equal(referenceTarget(parseReference('reg.io/x')), 'latest');
});

test('Docker Hub defaults', () => {
  const r = parseReference('ubuntu');
  assert.deepEqual(r, { kind: 'registry', registry: 'docker.io', host: 'registry-1.docker.io', repository: 'library/ubuntu', tag: undefined, digest: undefined });
  assert.equal(formatReference(parseReference('me/app:1')), 'docker.io/me/app:1');
  assert.equal((parseReference('index.docker.io/redis') as { repository: string }).repository, 'library/redis');
});

test('OCI layout references', () => {
  assert.deepEqual(parseReference('oci:/var/img:v2'), { kind: 'oci', path: '/var/img', tag: 'v2', digest: undefined });
  assert.deepEqual(parseReference('oci:rel/dir'), { kind: 'oci', path: 'rel/dir', tag: undefined, digest: undefined });
  assert.deepEqual(parseReference(`oci:/x@${D}`), { kind: 'oci', path: '/x', tag: undefined, digest: D });
});

test("skopeo's transports parse; unknown ones and paths that are no layout are refused before any lookup", () => {
  assert.deepEqual(parseReference('docker://127.0.0.1:5000/a:v1'), parseReference('127.0.0.1:5000/a:v1'));
  assert.deepEqual(parseReference('oci-archive:/tmp/a.tar:v1'), { kind: 'oci-archive', path: '/tmp/a.tar', tag: 'v1', digest: undefined });
  assert.equal(formatReference(parseReference('oci-archive:a.tar:v1')), 'oci-archive:a.tar:v1');
  for (const ok of ['localhost:5000/x', 'alpine:3.18', 'reg.io:443/a/b:c']) assert.equal(parseReference(ok).kind, 'registry', ok);
  for (const bad of ['foo://x', 'https://reg.io/a', 'ftp:host/x', 'dir:/tmp/x', 'docker-daemon:a:b', 'docker-archive:', 'docker-archive:a.tar:x@sha256:00', 'docker://', 'oci-archive:', './not-a-layout', '/abs/path']) {
    assert.throws(() => parseReference(bad), InvalidReferenceError, bad);
  }
});

test('malformed references are rejected with the reason', () => {
  for (const bad of ['', 'UPPER/case', 'host:5000/repo:bad tag', 'repo@sha256:1234', 'a//b', 'oci:', 'repo:' + 'x'.repeat(200)]) {
    assert.throws(() => parseReference(bad), InvalidReferenceError, bad);
  }
});

test('format ∘ parse is the identity on normalised references', () => {
  const comp = fc.stringMatching(/^[a-z0-9]{1,8}([._-][a-z0-9]{1,5})?$/);
  const arb = fc.record({
    host: fc.constantFrom('127.0.0.1:5000', 'reg.example.com', 'localhost:1234', 'docker.io'),
    repo: fc.array(comp, { minLength: 1, maxLength: 3 }),
    tag: fc.option(fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}$/), { nil: undefined }),
    digest: fc.option(fc.constant(D), { nil: undefined }),
  });
  fc.assert(
    fc.property(arb, ({ host, repo, tag, digest }) => {
      const text = `${host}/${repo.join('/')}${tag ? ':' + tag : ''}${digest ? '@' + digest : ''}`;
      const r = parseReference(text);
      const hubShort = host === 'docker.io' && repo.length === 1;
      assert.equal(formatReference(r), hubShort ? text.replace('docker.io/', 'docker.io/library/') : text);
      assert.deepEqual(parseReference(formatReference(r)), r);
    }),
  );
});

test('loopback detection', () => {
  assert.ok(isLoopbackHost('127.0.0.1:5000'));
  assert.ok(isLoopbackHost('localhost'));
  assert.ok(isLoopbackHost('[::1]:80'));
  assert.ok(!isLoopbackHost('registry.example.com'));
});
