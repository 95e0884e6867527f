import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { FIXTURES } from '../helpers/recipes.ts';
import { computeDigest, hasZFileMagic, HT_SPACE, parseHeader, rawCrc32c, blockCrc, serializeHeader, type ZFileHeader } from '../../src/zfile/format.ts';
import { openTarEntry } from '../../src/zfile/tar.ts';
import { MemorySource } from '../../src/io/memory.ts';

interface JsonHT {
  algo: number;
  block_size: number;
  dict_size: number;
  digest: string;
  flags: number;
  hdr_struct_size: number;
  index_crc: string;
  index_offset: number;
  index_size: number;
  level: number;
  original_file_size: number;
  use_dict: number;
  verify: number;
}

const headers = JSON.parse(readFileSync(path.join(FIXTURES, 'headers.json'), 'utf8')) as Record<string, { format: string; header: JsonHT; trailer: JsonHT }>;
const zfiles = Object.entries(headers).filter(([, v]) => v.format === 'zfile');

function expected(j: JsonHT): ZFileHeader {
  return {
    flags: j.flags,
    digest: parseInt(j.digest, 16),
    indexOffset: j.index_offset,
    indexSize: j.index_size,
    originalSize: j.original_file_size,
    indexCrc: parseInt(j.index_crc, 16),
    blockSize: j.block_size,
    algo: j.algo,
    level: j.level,
    useDict: j.use_dict,
    dictSize: j.dict_size,
    verify: j.verify !== 0,
  };
}

async function zfileBytes(name: string): Promise<Uint8Array> {
  const dir = name.startsWith('layer') ? 'lsmt' : 'zfile';
  const bytes = readFileSync(path.join(FIXTURES, dir, name));
  const entry = await openTarEntry(new MemorySource(bytes));
  return entry ? bytes.subarray(entry.base, entry.base + entry.size) : bytes;
}

test('raw CRC-32C matches the reference test vectors', () => {
  const data = Buffer.from('123456789');
  assert.equal(rawCrc32c(data, 0), 0x58e3fa20);
  assert.equal(rawCrc32c(data, 100007), 0x3c9bd4e0);
  assert.equal(blockCrc(data), 0x3c9bd4e0);
  assert.equal(rawCrc32c(new Uint8Array(0), 1234), 1234);
});

test('every zfile fixture has the manifest header and trailer', async () => {
  assert.ok(zfiles.length >= 6, 'headers.json lists the zfile fixtures');
  for (const [name, v] of zfiles) {
    const z = await zfileBytes(name);
    const h = z.subarray(0, HT_SPACE);
    const t = z.subarray(z.length - HT_SPACE);
    assert.ok(hasZFileMagic(h), name);
    assert.deepEqual(parseHeader(h, name, 0), expected(v.header), `${name} header`);
    assert.deepEqual(parseHeader(t, name, z.length - HT_SPACE), expected(v.trailer), `${name} trailer`);
    assert.equal(computeDigest(h), parseInt(v.header.digest, 16), `${name} header digest`);
    assert.equal(computeDigest(t), parseInt(v.trailer.digest, 16), `${name} trailer digest`);
    // serialize(parse(x)) reproduces the stored bytes, digest included.
    assert.deepEqual(serializeHeader(parseHeader(h, name, 0)), Uint8Array.from(h), `${name} header round trip`);
    assert.deepEqual(serializeHeader(parseHeader(t, name, 0)), Uint8Array.from(t), `${name} trailer round trip`);
    const table = z.subarray(v.trailer.index_offset, v.trailer.index_offset + 4 * v.trailer.index_size);
    assert.equal(rawCrc32c(table, 0), parseInt(v.trailer.index_crc, 16), `${name} index crc`);
  }
});

test('parseHeader rejects foreign bytes, truncation and a wrong struct size', () => {
  assert.throws(() => parseHeader(new Uint8Array(512), 'x', 0), /magic/);
  assert.throws(() => parseHeader(new Uint8Array(100), 'x', 0), /truncated/);
  const h = serializeHeader({ flags: 0x13, indexOffset: 0, indexSize: 0, originalSize: 0, indexCrc: 0, blockSize: 4096, algo: 1, level: 0, useDict: 0, dictSize: 0, verify: true });
  h[24] = 97;
  assert.throws(() => parseHeader(h, 'x', 0), /struct size is 97/);
});
