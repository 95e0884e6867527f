/**
 * applyLayer's OCI layer semantics (apply-cases.ts, one case per behaviour) on the in-memory
 * TreeModel, plus what the cases do not show: stats, streaming, the error's shape.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { applyLayer, type ApplyEntry, type ApplyTarget, type Attrs, type FileData } from '../../src/convert/apply.ts';
import { HardlinkTargetError, LayerApplyError } from '../../src/convert/errors.ts';
import { TreeModel } from '../../src/convert/tree-model.ts';
import { CASES, treeOf, type ApplyCase } from './apply-cases.ts';
import { dir, file, hardlink, opaque, sparseFile, stream, symlink, whiteout } from '../helpers/layer-entries.ts';
import { describeStack, stackArb } from '../helpers/layer-stacks.ts';

/** Applies the case's layers in order (named layer-1, layer-2, …); returns the error of a failing one. */
export async function applyCase(fs: ApplyTarget, c: ApplyCase): Promise<unknown> {
  for (let i = 0; i < c.layers.length; i++) {
    try {
      await applyLayer(fs, stream(c.layers[i]!), { name: `layer-${i + 1}` });
    } catch (e) {
      return e;
    }
  }
  return undefined;
}

describe('applyLayer on the tree model', () => {
  for (const c of CASES) {
    test(c.name, async () => {
      const model = new TreeModel();
      const err = await applyCase(model, c);
      if (c.fails) {
        assert.ok(err instanceof LayerApplyError, `expected a LayerApplyError, got ${String(err)}`);
        assert.match(err.message, c.fails);
      } else {
        assert.equal(err, undefined);
        c.expect!(treeOf(model.listing()));
      }
    });
  }
});

test('stats count entries, files, directories, whiteouts and data bytes', async () => {
  const model = new TreeModel();
  await applyLayer(model, stream([file('a', 'x'), file('b', 'y')]));
  const stats = await applyLayer(model, stream([
    dir('d'), file('d/f', '12345'), sparseFile('d/s', 1 << 20, [[4096, 'abc']]), hardlink('d/h', 'd/f'),
    symlink('d/l', 'f'), whiteout('a'), opaque('d'), file('.wh..wh.plnk', ''),
  ]));
  assert.deepEqual(stats, { entries: 8, files: 2, dirs: 1, whiteouts: 2, bytes: 8 });
});

test('file data goes to the filesystem as the entry\'s own piece stream', async () => {
  const seen: FileData[] = [];
  class Spy extends TreeModel {
    override createFile(d: number, n: Uint8Array, a: Attrs, size: number, data: FileData): Promise<number> {
      seen.push(data);
      return super.createFile(d, n, a, size, data);
    }
  }
  const spy = new Spy();
  let produced = 0;
  const e: ApplyEntry = file('big', '');
  const piece = new Uint8Array(1 << 20).fill(7);
  e.size = 64 << 20;
  const stream1 = (async function* () {
    for (let off = 0; off < e.size; off += piece.length) {
      produced++;
      yield { offset: off, bytes: piece };
    }
  })();
  e.data = () => stream1;
  await applyLayer(spy, stream([e]));
  assert.equal(seen.length, 1);
  assert.equal(seen[0], stream1, 'not copied or buffered by the applier');
  assert.equal(produced, 64);
});

test('a failing entry is a LayerApplyError naming layer and path, with the cause and its errno', async () => {
  const model = new TreeModel();
  const err = await applyLayer(model, stream([hardlink('x/y', 'nope')]), { name: 'sha256:abc' }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof LayerApplyError);
  assert.equal(err.layer, 'sha256:abc');
  assert.deepEqual(err.path, new TextEncoder().encode('x/y'));
  assert.ok(err.cause instanceof HardlinkTargetError);
  assert.equal(err.errno, 'ENOENT');
  assert.match(err.message, /^sha256:abc: entry "\/x\/y": hardlink target "\/nope" does not exist/);
});

test('an error from the entry stream itself propagates unchanged', async () => {
  const boom = new Error('truncated archive @512');
  const entries = (async function* () {
    yield file('a', 'x');
    throw boom;
  })();
  await assert.rejects(applyLayer(new TreeModel(), entries), (e) => e === boom);
});

test('an error while reading a file\'s data is wrapped with the entry', async () => {
  const e = file('f', '');
  e.size = 10;
  e.data = async function* () {
    yield { offset: 0, bytes: new Uint8Array(4) };
    throw new Error('unexpected end of archive');
  };
  await assert.rejects(applyLayer(new TreeModel(), stream([e]), { name: 'L' }), (err: unknown) =>
    err instanceof LayerApplyError && /^L: entry "\/f": unexpected end of archive/.test(err.message));
});

test('on random layer stacks the applier never makes a call the filesystem refuses', async () => {
  // The model throws TreeModelError for any call a filesystem would refuse (a name that
  // exists, a missing entry, unlinking a directory); the only failures allowed are the
  // layer's own (a bad hardlink).
  await fc.assert(fc.asyncProperty(stackArb({ wellFormed: false }), async (layers) => {
    const model = new TreeModel();
    for (const [i, l] of layers.entries()) {
      try {
        await applyLayer(model, stream(l), { name: `layer-${i + 1}` });
      } catch (e) {
        assert.ok(e instanceof LayerApplyError && e.cause instanceof HardlinkTargetError, `${String(e)}\n${describeStack(layers)}`);
        return;
      }
    }
  }), { numRuns: 300 });
});
