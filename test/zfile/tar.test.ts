import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { R, zinputOdd } from '../helpers/recipes.ts';
import { FileSource } from '../../src/io/file.ts';
import { MemorySource } from '../../src/io/memory.ts';
import { openTarEntry, tarHeaderBlocks, tarTrailerSize, TAR_PAYLOAD_OFFSET } from '../../src/zfile/tar.ts';
import { compressFile } from '../../src/zfile/writer.ts';
import { ZFileReader } from '../../src/zfile/reader.ts';
import { readAll } from './helpers.ts';
import { withTempDir } from '../helpers/temp.ts';

test('members of archives made by GNU tar (gnu, ustar, pax formats) are found in place', async () => {
  await withTempDir(async (dir) => {
    const payload = R('tar-member', 100_003);
    const long = 'd'.repeat(120);
    writeFileSync(path.join(dir, 'member.bin'), payload);
    writeFileSync(path.join(dir, long), payload);
    for (const [format, name] of [
      ['gnu', 'member.bin'],
      ['gnu', long],
      ['ustar', 'member.bin'],
      ['pax', 'member.bin'],
      ['pax', long],
    ] as const) {
      const archive = path.join(dir, `${format}-${name.length}.tar`);
      execFileSync('tar', ['-C', dir, `--format=${format}`, '-cf', archive, name]);
      const src = await FileSource.open(archive);
      try {
        const entry = await openTarEntry(src);
        assert.ok(entry, `${format} ${name.length}`);
        assert.equal(entry.size, payload.length);
        assert.ok((await readAll(entry)).equals(payload), `${format} ${name.length}`);
      } finally {
        await src.close();
      }
    }
  });
});

test('GNU tar reads the wrapper we write, and we read a zfile GNU tar wrapped', async () => {
  await withTempDir(async (dir) => {
    const input = path.join(dir, 'in.bin');
    writeFileSync(input, zinputOdd());
    const wrapped = path.join(dir, 'layer.tar');
    const st = await compressFile(input, wrapped, { algorithm: 'zstd', blockSize: 16384, tar: true });
    const listing = execFileSync('tar', ['-tvf', wrapped], { encoding: 'utf8' });
    assert.match(listing, new RegExp(`root/root\\s+${st.zfileSize} .* overlaybd\\.commit`));
    const bytes = readFileSync(wrapped);
    assert.equal(bytes.length, TAR_PAYLOAD_OFFSET + st.zfileSize + tarTrailerSize(st.zfileSize));
    execFileSync('tar', ['-C', dir, '-xf', wrapped]);
    const plain = readFileSync(path.join(dir, 'overlaybd.commit'));
    assert.ok(plain.equals(bytes.subarray(TAR_PAYLOAD_OFFSET, TAR_PAYLOAD_OFFSET + st.zfileSize)));

    // Rewrap the extracted zfile with GNU tar (gnu format, payload at 512) and read it in place.
    const gnu = path.join(dir, 'gnu.tar');
    execFileSync('tar', ['-C', dir, '--format=gnu', '-cf', gnu, 'overlaybd.commit']);
    const src = await FileSource.open(gnu);
    const entry = (await openTarEntry(src))!;
    assert.equal(entry.base, 512);
    const r = await ZFileReader.open(entry);
    assert.ok((await readAll(r)).equals(zinputOdd()));
    await r.close();
  });
});

test('tar header blocks: PAX record length counts itself; trailer pads to 512 plus 1024', () => {
  for (const size of [0, 1, 9, 10, 99, 100, 511, 512, 1_000_000, 2 ** 40]) {
    const h = tarHeaderBlocks(size);
    const rec = Buffer.from(h.subarray(512, 1024)).toString('latin1').replace(/\0+$/, '');
    assert.equal(rec, `${rec.length} size=${size}\n`);
    assert.equal(parseInt(Buffer.from(h.subarray(124, 135)).toString('latin1').trim(), 8), rec.length);
    assert.equal((size + tarTrailerSize(size)) % 512, 0);
    assert.ok(tarTrailerSize(size) >= 1024 && tarTrailerSize(size) < 1536);
  }
});

test('non-tar inputs are null, not errors', async () => {
  assert.equal(await openTarEntry(new MemorySource(new Uint8Array(100))), null);
  assert.equal(await openTarEntry(new MemorySource(new Uint8Array(4096))), null);
  assert.equal(await openTarEntry(new MemorySource(R('x', 4096))), null);
});
