/**
 * The shape a Stack takes: whatever can say which ranges of a disk it holds (a mapping table
 * into its source) is a layer. LSMT's sealed layers are one kind; another format that yields
 * a mapping table stacks the same way.
 */
import type { ByteSource } from '../io/types.ts';
import type { MappingTable } from './table.ts';

export interface Layer {
  /** Where the mapped bytes are read from (moffsets in `index` point into it). */
  readonly source: ByteSource;
  /** Live mappings, sorted and non-overlapping (sectors). */
  readonly index: MappingTable;
  /** Bytes; 0 means "the size of the layers below". */
  readonly virtualSize: number;
  readonly uuid: string;
  readonly parentUuid: string;
  /** The layer's own label (LSMT user tag), '' when none. */
  readonly description: string;
}
