/**
 * The verity area's public part (docs/format.md §7): trees for layer blobs, verified reads,
 * adding trees to existing images, and checking images.
 */
export { VerityError, VerityMissingError } from './errors.ts';
export { TreeBuilder, TreeShape, DEFAULT_CHUNK } from './tree.ts';
export { TreeVerifier, type TreeParams, type TreeVerifierOptions } from './verifier.ts';
export { VerifyingSource, VerifiedStore, type VerifyingSourceOptions } from './source.ts';
export { VerityAnnotation, VerityMediaType, layerVerity, type LayerVerity } from './annotations.ts';
export { buildTree, digestAndTree, type BuiltTree } from './publish.ts';
export { addVerity, type VerityAddOptions, type VerityAddResult } from './add.ts';
export { checkImage, type CheckOptions, type ImageReport, type LayerReport, type CheckResult } from './check.ts';
