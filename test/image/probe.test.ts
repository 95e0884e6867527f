/** Blobs that are not overlaybd layers are named for what they are, with what to do. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { FormatError } from '../../src/io/errors.ts';
import { openLayerFile } from '../../src/image/open.ts';
import { obd } from '../helpers/cli.ts';
import { FIXTURES } from '../helpers/recipes.ts';
import { suiteTempDir } from '../helpers/temp.ts';

describe('probing layer blobs', () => {
  const tmp = suiteTempDir('obd-probe-');
  const file = (name: string, bytes: Uint8Array): string => {
    const p = path.join(tmp.path, name);
    writeFileSync(p, bytes);
    return p;
  };

  const cases: [string, () => string, RegExp][] = [
    ['a qcow2 image', () => (execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(tmp.path, 'd.qcow2'), '1M']), path.join(tmp.path, 'd.qcow2')), /qcow2 image, not an overlaybd layer: import it first/],
    ['an ext4 filesystem', () => {
      const p = file('fs.raw', new Uint8Array(4 << 20));
      execFileSync('mkfs.ext4', ['-q', '-F', p]);
      return p;
    }, /raw ext2\/3\/4 filesystem image, not an overlaybd layer: make a layer of it with obd import/],
    ['a gzip-compressed layer', () => file('layer.gz', gzipSync(new Uint8Array(8192))), /gzip-compressed tar, not an overlaybd layer.*skopeo copy --preserve-digests/],
    ['a tar without a layer', () => {
      execFileSync('tar', ['-cf', path.join(tmp.path, 'x.tar'), '-C', FIXTURES, 'MANIFEST.md']);
      return path.join(tmp.path, 'x.tar');
    }, /inside the tar wrapper.*nor a zfile|tar archive/],
    ['random bytes', () => file('junk.bin', new Uint8Array(8192).fill(0x42)), /not an LSMT layer \(no LSMT magic at offset 0\), nor a zfile or a tar-wrapped layer/],
  ];
  for (const [what, make, message] of cases) {
    it(`${what} is named as such`, async () => {
      const p = make();
      await assert.rejects(openLayerFile(p), (e: unknown) => e instanceof FormatError && message.test(e.message));
    });
  }

  it('through the CLI too', async () => {
    const r = await obd(['info', file('junk2.gz', gzipSync(new Uint8Array(100)))]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /gzip-compressed tar/);
  });
});
