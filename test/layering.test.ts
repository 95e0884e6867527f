/**
 * The areas import one another only one way (docs/design.md §5): io uses nothing else, and
 * transport and storage (src/remote) never reach up into image composition (src/image), which
 * is what makes a second transport or a second composition possible without the other.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src');

/** The areas (folders of src/) each file of `area` imports, static or dynamic. */
async function importsOf(area: string): Promise<Array<{ file: string; uses: string }>> {
  const out: Array<{ file: string; uses: string }> = [];
  for (const name of await readdir(path.join(SRC, area), { recursive: true })) {
    if (!name.endsWith('.ts')) continue;
    const text = await readFile(path.join(SRC, area, name), 'utf8');
    for (const m of text.matchAll(/(?:from\s+|import\()\s*'(\.[^']+)'/g)) {
      const target = path.relative(SRC, path.resolve(path.dirname(path.join(SRC, area, name)), m[1]!));
      const uses = target.split(path.sep)[0]!;
      if (uses !== area) out.push({ file: `src/${area}/${name}`, uses: target.includes(path.sep) ? uses : target });
    }
  }
  return out;
}

const RULES: Record<string, readonly string[]> = {
  io: [],
  remote: ['io', 'zfile', 'lsmt', 'verity'],
  tar: ['io'],
};

for (const [area, allowed] of Object.entries(RULES)) {
  test(`src/${area} imports only ${allowed.length ? allowed.join(', ') : 'itself'}`, async () => {
    const found = await importsOf(area);
    assert.ok(area !== 'remote' || found.length > 0, 'the scan finds the imports it checks');
    const bad = found.filter((i) => !allowed.includes(i.uses));
    assert.deepEqual(bad, [], bad.map((b) => `${b.file} imports src/${b.uses}`).join('\n'));
  });
}
