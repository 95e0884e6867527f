/** ext4 directory hashes (src/ext4/hash.ts) against e2fsprogs' debugfs dx_hash. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import { dirHash, type HashVersion } from '../../src/ext4/hash.ts';
import { tempDir } from '../helpers/temp.ts';

const VERSIONS: readonly HashVersion[] = ['legacy', 'half_md4', 'tea'];

function seedWords(uuid: string): Uint32Array {
  const bytes = Buffer.from(uuid.replaceAll('-', ''), 'hex');
  return new Uint32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + 16));
}

test('legacy, half_md4 and tea, signed and unsigned, with and without a seed, equal debugfs dx_hash on 400 random names', async (t) => {
  const dir = await tempDir(t, 'obd-dxhash-');
  // debugfs' command parser splits on whitespace and treats '"' as quoting: names avoid them
  // (and "--" ends the options, for names starting with '-').
  const names = fc.sample(
    fc.uint8Array({ minLength: 1, maxLength: 255, size: 'max' }).map((a) => a.map((c) => (c <= 0x20 || c === 0x22 ? 0x41 + (c % 26) : c))),
    { numRuns: 400, seed: 18 },
  );
  names.push(Buffer.from('hello'), Buffer.from('a'), Buffer.from('\xff\x80\xfe', 'latin1'), Buffer.alloc(32, 0x9f), Buffer.alloc(33, 0x61));
  const seeds = ['00000000-0000-0000-0000-000000000000', '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0'];
  const cases: { name: Uint8Array; code: number; seed: string }[] = [];
  const lines: Buffer[] = [];
  for (const name of names) {
    for (const seed of seeds) {
      // Codes 0–2 are the signed-char versions, 3–5 the unsigned ones (EXT2_HASH_*_UNSIGNED).
      for (let code = 0; code < 6; code++) {
        cases.push({ name, code, seed });
        lines.push(Buffer.concat([Buffer.from(`dx_hash -h ${code} -s ${seed} -- `), name, Buffer.from('\n')]));
      }
    }
  }
  const script = path.join(dir, 'script');
  await writeFile(script, Buffer.concat(lines));
  const run = spawnSync('debugfs', ['-f', script], { maxBuffer: 64 << 20 });
  assert.equal(run.status, 0, run.stderr.toString());
  const got = run.stdout.toString('latin1').split('\n').filter((l) => l.startsWith('Hash of '))
    .map((l) => /is 0x([0-9a-f]+) \(minor 0x([0-9a-f]+)\)$/.exec(l)!);
  assert.equal(got.length, cases.length);
  let differ = 0;
  for (const [i, c] of cases.entries()) {
    const h = dirHash(c.name, VERSIONS[c.code % 3], seedWords(c.seed), c.code >= 3);
    // The kernel moves 0xfffffffe (its end-of-directory cookie) to 0xfffffffc; e2fsprogs does not.
    let major = parseInt(got[i][1], 16);
    if (major === 0xfffffffe) major = 0xfffffffc;
    const minor = parseInt(got[i][2], 16);
    if (h.major !== major || h.minor !== minor) {
      differ++;
      assert.fail(`${VERSIONS[c.code % 3]} ${c.code >= 3 ? 'unsigned' : 'signed'} seed ${c.seed} name ${Buffer.from(c.name).toString('hex')}: ` +
        `ours ${h.major.toString(16)}/${h.minor.toString(16)}, debugfs ${major.toString(16)}/${minor.toString(16)}`);
    }
  }
  assert.equal(differ, 0);
  const high = names.filter((n) => n.some((c) => c >= 0x80)).length;
  assert.ok(high > 300, `names with bytes ≥ 0x80: ${high}`);
});

test('signedness matters only for bytes ≥ 0x80, and the major hash is always even', () => {
  const ascii = Buffer.from('plain-ascii-name');
  const high = Buffer.from('caf\xe9', 'latin1');
  for (const v of VERSIONS) {
    assert.deepEqual(dirHash(ascii, v, undefined, false), dirHash(ascii, v, undefined, true));
    assert.notDeepEqual(dirHash(high, v, undefined, false), dirHash(high, v, undefined, true));
    assert.equal(dirHash(high, v, undefined, false).major & 1, 0);
  }
  assert.deepEqual(dirHash(ascii, 'tea', new Uint32Array(4), false), dirHash(ascii, 'tea', undefined, false), 'all-zero seed = default');
  assert.notDeepEqual(dirHash(ascii, 'tea', new Uint32Array([1, 0, 0, 0]), false), dirHash(ascii, 'tea', undefined, false));
});
