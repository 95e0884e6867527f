/** What files and registries say is printed, never obeyed: control characters come out escaped. */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { printable } from '../../src/cli/common.ts';
import { obd } from '../helpers/cli.ts';
import { withTempDir } from '../helpers/temp.ts';

test('printable escapes control characters and keeps newlines and tabs', () => {
  assert.equal(printable('a\x1b[31mb\x07\x9b c\td\n'), 'a\\x1b[31mb\\x07\\x9b c\td\n');
});

test('a user tag with terminal escapes is shown escaped by obd info', async () => {
  await withTempDir(async (dir) => {
    const raw = path.join(dir, 'd.raw');
    await writeFile(raw, new Uint8Array(1 << 20).fill(1));
    const layer = path.join(dir, 'd.lsmt');
    const made = await obd(['import', raw, layer, '-m', 'evil\x1b]0;pwned\x07\x1b[2J']);
    assert.equal(made.code, 0, made.stderr);
    const r = await obd(['info', layer]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /[\x00-\x08\x0b-\x1f\x7f]/);
    assert.match(r.stdout, /evil.*pwned/);
    const j = await obd(['info', layer, '--json']);
    assert.equal(JSON.parse(j.stdout).userTag, 'evil\x1b]0;pwned\x07\x1b[2J', 'JSON keeps the exact value');
  }, 'obd-printable-');
});
