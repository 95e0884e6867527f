/**
 * Property: random stacks of 2–5 layers (every entry type, whiteouts, opaque directories,
 * hardlinks within and across layers, replacements of any type by any type) applied by
 * applyLayer onto the TreeModel give the same tree as umoci unpacking the same layers, written
 * as tars by python3's tarfile. Both refuse the same stacks (a hardlink to nothing or to a
 * directory). The generator keeps to well-formed layers, as real producers write them: each
 * entry's parent directories come as entries before it, symlink targets never name a path of
 * the tree, and no hardlink names itself (layer-stacks.ts) — the cases where this project
 * decided otherwise than umoci (apply.ts) are tested in apply.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fc from 'fast-check';
import { applyLayer } from '../../src/convert/apply.ts';
import { TreeModel } from '../../src/convert/tree-model.ts';
import { stream } from '../helpers/layer-entries.ts';
import { describeStack, stackArb } from '../helpers/layer-stacks.ts';
import { listTree } from '../helpers/fs-listing.ts';
import { tryUmociUnpack, writeLayout, writeTars } from '../helpers/umoci-oracle.ts';
import { assertSameListing } from './helpers.ts';
import { withTempDir } from '../helpers/temp.ts';

test('applyLayer on the model agrees with umoci on random layer stacks', { timeout: 120_000 }, async () => {
  let compared = 0;
  let refused = 0;
  await fc.assert(fc.asyncProperty(stackArb({ wellFormed: true }), async (layers) => {
    const model = new TreeModel();
    let ours: unknown;
    for (const [i, l] of layers.entries()) {
      try {
        await applyLayer(model, stream(l), { name: `layer-${i + 1}` });
      } catch (e) {
        ours = e;
        break;
      }
    }
    await withTempDir(async (tmp) => {
      await writeLayout(path.join(tmp, 'layout'), await writeTars(tmp, layers));
      const theirs = await tryUmociUnpack(path.join(tmp, 'layout'), path.join(tmp, 'bundle'));
      if ('error' in theirs) {
        assert.ok(ours, `umoci refused the stack, applyLayer did not: ${theirs.error}`);
        refused++;
        if (process.env.SHOW) console.log('REFUSED', String(ours).slice(0, 200), '|', theirs.error.slice(-300));
        return;
      }
      assert.equal(ours, undefined, `applyLayer refused a stack umoci unpacked: ${String(ours)}`);
      // umoci leaves a directory's mtime at the unpack's time where a whiteout removed something inside.
      const opts = { noLostFound: true, noDirMtimes: true };
      try {
        assertSameListing(model.listing(opts).split('\n'), await listTree(theirs.rootfs, opts), ['applyLayer', 'umoci']);
      } catch (e) {
        throw new Error(`${(e as Error).message}\n${describeStack(layers)}`);
      }
      compared++;
    }, 'obd-umoci-');
  }), { numRuns: Number(process.env.UMOCI_RUNS ?? 25) });
  if (process.env.SHOW) console.log('compared', compared, 'refused', refused);
  assert.ok(compared >= 6, `only ${compared} stacks compared (${refused} refused by both)`);
});
