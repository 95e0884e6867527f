/** The temp-dir helpers remove their directory when its owner ends, also when a test fails. */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it, test } from 'node:test';
import { suiteTempDir, tempDir, withTempDir } from './temp.ts';

test('withTempDir removes its directory when fn returns and when it throws', async () => {
  let kept = '';
  assert.equal(await withTempDir(async (dir) => {
    kept = dir;
    await writeFile(path.join(dir, 'f'), 'x');
    return 7;
  }), 7);
  assert.ok(path.basename(kept).startsWith('obd-') && !existsSync(kept));
  await assert.rejects(withTempDir(async (dir) => {
    kept = dir;
    throw new Error('boom');
  }, 'obd-fail-'), /boom/);
  assert.ok(path.basename(kept).startsWith('obd-fail-') && !existsSync(kept));
});

test('tempDir removes its directory when the subtest ends', async (t) => {
  let dir = '';
  await t.test('subtest', async (s) => {
    dir = await tempDir(s, 'obd-sub-');
    assert.ok(existsSync(dir));
  });
  assert.ok(dir && !existsSync(dir));
  // Removal is an after hook, which node:test runs whether the test passed or failed.
  const hooks: (() => unknown)[] = [];
  dir = await tempDir({ after: (fn) => hooks.push(fn) });
  assert.ok(existsSync(dir) && hooks.length === 1);
  await hooks[0]!();
  assert.ok(!existsSync(dir));
});

const seen: string[] = [];
describe('suiteTempDir', () => {
  const tmp = suiteTempDir('obd-suite-');
  it('gives every test of the describe the same existing directory', () => {
    assert.ok(path.basename(tmp.path).startsWith('obd-suite-') && existsSync(tmp.path));
    seen.push(tmp.path);
  });
});
test('suiteTempDir removed its directory after the describe', () => {
  assert.equal(seen.length, 1);
  assert.ok(!existsSync(seen[0]!));
});
