/**
 * `obd verity add` (docs/format.md §7.5): trees for an existing image's layers without
 * touching the layer blobs. Each layer is streamed once, checked against its digest (a tree
 * over wrong bytes would vouch for them), its tree uploaded; the manifest is pushed again with
 * the annotations added and the tag moved to it, followed by the referrer artifact.
 */
import { createHash } from 'node:crypto';
import { DigestMismatchError } from '../remote/errors.ts';
import { openRepository, resolveImage, type RemoteOptions } from '../remote/image.ts';
import { encodeJson, type Descriptor } from '../remote/manifest.ts';
import { DEFAULT_TAG, formatReference, referenceTarget, resolveReference, type ImageReference } from '../remote/reference.ts';
import { layerVerity } from './annotations.ts';
import { publishReferrer, publishTree, TreeHasher } from './publish.ts';
import { DEFAULT_CHUNK } from './tree.ts';

export interface VerityAddOptions extends RemoteOptions {
  /** Chunk size of new trees (default 128 KiB). */
  chunk?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface VerityAddResult {
  reference: string;
  /** The new image manifest (equal to `previous` when every layer already had a tree). */
  digest: string;
  previous: string;
  layers: Array<{ digest: string; size: number; tree: string; added: boolean }>;
}

export async function addVerity(ref: string | ImageReference, opts: VerityAddOptions = {}): Promise<VerityAddResult> {
  const r = await resolveReference(ref);
  const opened = await openRepository(r, opts);
  try {
    const repo = opened.repo;
    const img = await resolveImage(repo, referenceTarget(r), opts.platform);
    const doc = JSON.parse(Buffer.from(img.raw.bytes).toString('utf8')) as { layers: Descriptor[] };
    const total = img.manifest.layers.reduce((a, d) => (layerVerity(d, repo.name) ? a : a + d.size), 0);
    let done = 0;
    const layers: VerityAddResult['layers'] = [];
    for (let i = 0; i < doc.layers.length; i++) {
      const d = img.manifest.layers[i]!;
      const have = layerVerity(d, repo.name);
      if (have) {
        layers.push({ digest: d.digest, size: d.size, tree: have.tree, added: false });
        continue;
      }
      const hash = createHash('sha256');
      const tree = new TreeHasher(opts.chunk ?? DEFAULT_CHUNK, d.size);
      for await (const piece of repo.streamBlob(d.digest)) {
        hash.update(piece);
        tree.update(piece);
        done += piece.length;
        opts.onProgress?.(done, total);
      }
      const actual = 'sha256:' + hash.digest('hex');
      if (actual !== d.digest) throw new DigestMismatchError(`${repo.name} blob`, d.digest, actual);
      const built = tree.finish();
      const annotated = await publishTree(repo, d, built);
      doc.layers[i] = { ...doc.layers[i]!, annotations: annotated.annotations };
      layers.push({ digest: d.digest, size: d.size, tree: built.digest, added: true });
    }
    const reference = formatReference(r);
    if (!layers.some((l) => l.added)) return { reference, digest: img.digest, previous: img.digest, layers };
    const tag = r.tag ?? (r.digest ? undefined : DEFAULT_TAG);
    const bytes = encodeJson(doc);
    const digest = await repo.putManifest(bytes, img.raw.mediaType, img.index ? undefined : tag);
    if (img.index) {
      // A multi-platform image: the index entry moves to the new manifest, the tag to the new index.
      const idx = JSON.parse(Buffer.from(img.index.bytes).toString('utf8')) as { manifests: Descriptor[] };
      idx.manifests = idx.manifests.map((m) => (m.digest === img.digest ? { ...m, digest, size: bytes.length } : m));
      await repo.putManifest(encodeJson(idx), img.index.mediaType, tag);
    }
    await publishReferrer(repo, { mediaType: img.raw.mediaType, digest, size: bytes.length }, doc.layers);
    return { reference, digest, previous: img.digest, layers };
  } finally {
    await opened.close();
  }
}
