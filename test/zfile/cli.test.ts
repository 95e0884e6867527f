import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { zinput8m, zinputOdd } from '../helpers/recipes.ts';
import { ZFIXTURES } from './helpers.ts';
import { withTempDir } from '../helpers/temp.ts';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.ts');

function obd(...args: (string | { stdin: Uint8Array })[]): { code: number; stdout: string; stderr: string } {
  const input = args.find((a) => typeof a !== 'string')?.stdin;
  const argv = args.filter((a): a is string => typeof a === 'string');
  const r = spawnSync(process.execPath, [MAIN, 'zfile', ...argv], { encoding: 'utf8', input });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

test('obd zfile compress / info / verify / decompress round trip with --json', async () => {
  await withTempDir(async (dir) => {
    const input = path.join(dir, 'in.bin');
    writeFileSync(input, zinputOdd());
    const out = path.join(dir, 'out.tar');
    const c = obd('compress', input, out, '--algorithm', 'zstd', '--level', '5', '--block-size', '16K', '--tar', '--threads', '2', '--json');
    assert.equal(c.code, 0, c.stderr);
    const stats = JSON.parse(c.stdout);
    assert.equal(stats.originalSize, zinputOdd().length);
    assert.equal(stats.blocks, 76);
    assert.deepEqual(readdirSync(dir).sort(), ['in.bin', 'out.tar'], 'no temp file left behind');

    const i = obd('info', out, '--json');
    assert.equal(i.code, 0, i.stderr);
    const info = JSON.parse(i.stdout);
    assert.deepEqual([info.algorithm, info.level, info.blockSize, info.crc, info.tar.offset], ['zstd', 5, 16384, true, 1536]);

    const v = obd('verify', out);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /OK, 76 blocks/);

    const back = path.join(dir, 'back.bin');
    const d = obd('decompress', out, back);
    assert.equal(d.code, 0, d.stderr);
    assert.ok(readFileSync(back).equals(zinputOdd()));

    const piped = path.join(dir, 'piped.zfile');
    const s = obd('compress', '-', piped, '--no-crc', { stdin: zinput8m() });
    assert.equal(s.code, 0, s.stderr);
    assert.ok(readFileSync(piped).equals(readFileSync(path.join(ZFIXTURES, 'zinput-8m.lz4-bs4-nocrc.zfile'))), 'stdin input, reference bytes');

    const h = obd('info', path.join(ZFIXTURES, 'zinput-8m.lz4-bs4-nocrc.zfile'));
    assert.equal(h.code, 0);
    assert.match(h.stdout, /algorithm:\s+lz4/);
    assert.match(h.stdout, /block CRC:\s+no/);
  });
});

test('obd zfile fails with a clear message and non-zero exit on damage and bad input', async () => {
  await withTempDir(async (dir) => {
    const bad = Buffer.from(readFileSync(path.join(ZFIXTURES, 'zinput-8m.lz4-bs4.zfile')));
    bad[100_000]! ^= 0xff;
    const badPath = path.join(dir, 'bad.zfile');
    writeFileSync(badPath, bad);
    const v = obd('verify', badPath, '--json');
    assert.equal(v.code, 1);
    const report = JSON.parse(v.stdout);
    assert.equal(report.ok, false);
    assert.equal(report.errorCount, 1);
    assert.equal(report.errors[0].kind, 'block-crc');

    const d = obd('decompress', badPath, path.join(dir, 'never.bin'));
    assert.equal(d.code, 1);
    assert.match(d.stderr, /^obd: .*bad\.zfile @\d+: block \d+: CRC mismatch/);
    assert.equal(existsSync(path.join(dir, 'never.bin')), false);
    assert.deepEqual(readdirSync(dir), ['bad.zfile'], 'failed output removed');

    const notZ = obd('info', path.join(dir, 'bad.zfile.missing'));
    assert.notEqual(notZ.code, 0);
    assert.match(notZ.stderr, /no such file/);

    writeFileSync(path.join(dir, 'plain.bin'), 'hello');
    const plain = obd('verify', path.join(dir, 'plain.bin'));
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /too small for a zfile/);

    const opt = obd('compress', path.join(dir, 'plain.bin'), path.join(dir, 'x.zfile'), '--block-size', '3K');
    assert.equal(opt.code, 1);
    assert.match(opt.stderr, /power of two from 4 KiB to 64 KiB/);
    const algo = obd('compress', path.join(dir, 'plain.bin'), path.join(dir, 'x.zfile'), '--algorithm', 'gzip');
    assert.notEqual(algo.code, 0);
    assert.equal(existsSync(path.join(dir, 'x.zfile')), false);
  });
});

test('obd zfile decompress of a damaged block names file, block and offset, and leaves no output', async () => {
  await withTempDir(async (dir) => {
    const input = path.join(dir, 'in.bin');
    writeFileSync(input, randomBytes(16 << 20));
    const good = path.join(dir, 'good.zfile');
    assert.equal(obd('compress', input, good).code, 0);
    // Damage in later chunks too: the read-ahead then fails while the previous chunk is written.
    for (const at of [1_100_000, 5_000_000, 9_000_000, 13_000_000]) {
      const bytes = readFileSync(good);
      bytes[at]! ^= 0xff;
      const bad = path.join(dir, 'bad.zfile');
      writeFileSync(bad, bytes);
      const out = path.join(dir, 'out.bin');
      const r = obd('decompress', bad, out);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^obd: .*bad\.zfile @\d+: block \d+: CRC mismatch[^\n]*\n$/, `damage at ${at}`);
      assert.deepEqual(readdirSync(dir).sort(), ['bad.zfile', 'good.zfile', 'in.bin'], `damage at ${at}: nothing left behind`);
    }
  });
});

test('obd zfile compress takes -z/--compress like commit, import and push (and -a/--algorithm)', async () => {
  await withTempDir(async (dir) => {
    const input = path.join(dir, 'in.bin');
    writeFileSync(input, zinputOdd());
    const a = obd('compress', input, path.join(dir, 'a.zfile'), '-z', 'zstd', '--block-size', '16K', '--json');
    const b = obd('compress', input, path.join(dir, 'b.zfile'), '--algorithm', 'zstd', '--block-size', '16K');
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(JSON.parse(a.stdout).algorithm, 'zstd');
    assert.ok(readFileSync(path.join(dir, 'a.zfile')).equals(readFileSync(path.join(dir, 'b.zfile'))));
  });
});
