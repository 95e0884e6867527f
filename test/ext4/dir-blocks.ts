/** In-memory DirBlocks for the directory tests: blocks as arrays, dirty blocks recorded. */
import type { DirBlocks } from '../../src/ext4/dir.ts';

export class MemBlocks implements DirBlocks {
  readonly name = 'memdir';
  readonly blockSize: number;
  readonly blocks: Uint8Array[] = [];
  readonly dirtied = new Set<number>();
  constructor(blockSize = 4096) {
    this.blockSize = blockSize;
  }
  get count(): number {
    return this.blocks.length;
  }
  read(lblk: number): Promise<Uint8Array> {
    if (lblk < 0 || lblk >= this.blocks.length) throw new RangeError(`read of block ${lblk} of ${this.blocks.length}`);
    return Promise.resolve(this.blocks[lblk]);
  }
  dirty(lblk: number): void {
    if (lblk < 0 || lblk >= this.blocks.length) throw new RangeError(`dirty of block ${lblk} of ${this.blocks.length}`);
    this.dirtied.add(lblk);
  }
  append(): Promise<number> {
    this.blocks.push(new Uint8Array(this.blockSize));
    return Promise.resolve(this.blocks.length - 1);
  }
}
