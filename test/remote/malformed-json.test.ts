/**
 * Found by the fuzzing harness (npm run fuzz): config.v1.json and OCI-layout documents whose
 * members have the wrong JSON type crashed with TypeErrors (and leaked open layer files), and
 * a file name too long escaped as a raw ENAMETOOLONG (a result file's, after the layers were
 * open, which then stayed open); they must be refused with typed errors, closing what was opened.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { openImage } from '../../src/image/open.ts';
import { InvalidArgumentError } from '../../src/io/errors.ts';
import { InvalidReferenceError } from '../../src/remote/errors.ts';
import { OciLayout } from '../../src/remote/oci-layout.ts';
import { FIXTURES } from '../helpers/recipes.ts';
import { tempDir } from '../helpers/temp.ts';

const layer = path.join(FIXTURES, 'lsmt', 'layer1.lsmt');

test('config.v1.json members of the wrong type are refused with InvalidReferenceError', async (t) => {
  const dir = await tempDir(t);
  await copyFile(layer, path.join(dir, 'base.lsmt'));
  const cases: [string, unknown][] = [
    ['upper.data', { lowers: [{ file: 'base.lsmt' }], upper: { data: 511, index: 'up.index' } }],
    ['upper.index', { lowers: [{ file: 'base.lsmt' }], upper: { data: 'up.data', index: ['x'] } }],
    ['lowers[1]', { lowers: [{ file: 'base.lsmt' }, null] }],
    ['lowers[0].file', { lowers: [{ file: true }] }],
    ['lowers[0].dir', { lowers: [{ dir: 2 ** 53 }] }],
    ['resultFile', { lowers: [{ file: 'base.lsmt' }], resultFile: {} }],
    ['recordTracePath', { lowers: [{ file: 'base.lsmt' }], recordTracePath: 0.5 }],
    ['NUL byte', { lowers: [{ file: 'base.lsmt' }], upper: { data: '\0', index: 'up.index' } }],
    ['no lowers', null],
  ];
  for (const [what, doc] of cases) {
    const file = path.join(dir, 'config.v1.json');
    await writeFile(file, JSON.stringify(doc));
    await assert.rejects(openImage([file]), (e) => e instanceof InvalidReferenceError, what);
  }
});

test('a config naming a writable layer whose file name is too long is refused with a typed error', async (t) => {
  const dir = await tempDir(t);
  await copyFile(layer, path.join(dir, 'base.lsmt'));
  const file = path.join(dir, 'config.v1.json');
  await writeFile(file, JSON.stringify({ lowers: [{ file: 'base.lsmt' }], upper: { data: 'a'.repeat(4096), index: 'up.index' } }));
  await assert.rejects(openImage([file]), (e) => e instanceof InvalidArgumentError && /too long/.test(e.message));
});

test('a result file that cannot be written fails the open with a typed error and leaves no layer file open', async (t) => {
  const dir = await tempDir(t);
  await copyFile(layer, path.join(dir, 'base.lsmt'));
  const file = path.join(dir, 'config.v1.json');
  await writeFile(file, JSON.stringify({ lowers: Array.from({ length: 8 }, () => ({ file: 'base.lsmt' })), resultFile: 'r'.repeat(4096) }));
  const fds = () => readdirSync('/proc/self/fd').length;
  const before = fds();
  await assert.rejects(openImage([file]), (e) => e instanceof InvalidArgumentError && /too long/.test(e.message));
  assert.equal(fds(), before, 'the opened layer files were closed');
});

test('an OCI layout index.json with malformed descriptors is refused with InvalidReferenceError', async (t) => {
  const dir = await tempDir(t);
  await OciLayout.open(dir, { create: true });
  const digest = 'sha256:' + 'a'.repeat(64);
  for (const manifests of [[{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: [digest], size: 10 }], [null], [{ digest, size: -1 }]]) {
    await writeFile(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
    await assert.rejects(openImage([`oci:${dir}:latest`]), (e) => e instanceof InvalidReferenceError, JSON.stringify(manifests));
  }
  await mkdir(path.join(dir, 'x'), { recursive: true });
  await writeFile(path.join(dir, 'index.json'), 'null');
  await assert.rejects(openImage([`oci:${dir}:latest`]), InvalidReferenceError);
});
