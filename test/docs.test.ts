/**
 * Comments that cite a document cite one in the repository: every `docs/<name>.md §N` in
 * src/, test/ and bench/ names a file of docs/ that has a heading for section N.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(path.join(ROOT, dir), { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith('.ts')) out.push(path.join(e.parentPath, e.name));
  }
  return out;
}

/** "§2.1–2.2, §2.5" → ['2.1', '2.2', '2.5']. */
function sections(text: string): string[] {
  return [...text.matchAll(/§?(\d+(?:\.\d+)*)/g)].map((m) => m[1]!);
}

test('every docs/*.md § citation in src, test and bench names an existing section', async () => {
  const headings = new Map<string, Set<string>>();
  for (const name of await readdir(path.join(ROOT, 'docs'))) {
    const text = await readFile(path.join(ROOT, 'docs', name), 'utf8');
    headings.set(name, new Set([...text.matchAll(/^#+ §(\d+(?:\.\d+)*) /gm)].map((m) => m[1]!)));
  }
  const files = (await Promise.all(['src', 'test', 'bench'].map(sources))).flat();
  let cited = 0;
  const broken: string[] = [];
  for (const file of files) {
    const text = await readFile(file, 'utf8');
    // A citation may wrap onto the next comment line: "docs/format.md\n * §2.4".
    for (const m of text.matchAll(/docs\/([\w-]+\.md)((?:\s*\*?\s*§\d+(?:\.\d+)*(?:[–-]\d+(?:\.\d+)*)?,?)*)/g)) {
      const doc = m[1]!;
      const where = `${path.relative(ROOT, file)}: docs/${doc}${m[2]!.replace(/\s*\*\s*/g, ' ')}`;
      const have = headings.get(doc);
      if (!have) {
        broken.push(`${where} (no such file)`);
        continue;
      }
      for (const s of sections(m[2]!)) {
        cited++;
        if (!have.has(s)) broken.push(`${where} (no section §${s})`);
      }
    }
  }
  assert.deepEqual(broken, []);
  assert.ok(cited >= 20, `found only ${cited} section citations: the pattern no longer matches the comments`);
});

test('no comment cites the out-of-tree spec or notes', async () => {
  const files = (await Promise.all(['src', 'test', 'bench'].map(sources))).flat();
  const stale: string[] = [];
  for (const file of files) {
    if (file.endsWith(path.join('test', 'docs.test.ts'))) continue;
    const text = await readFile(file, 'utf8');
    for (const m of text.matchAll(/(?<![\w/])(?:reference\.md|spec\/\w+\.md|notes\/\w+\.md)/g)) stale.push(`${path.relative(ROOT, file)}: ${m[0]}`);
  }
  assert.deepEqual(stale, []);
});
