/** A plain description of an opened layer, for `obd info` and the library. */
import { ENTRY_SIZE, FLAG_DATA, FLAG_HEADER, FLAG_SEALED, FLAG_SPARSE, HT_SPACE, SECTOR, type HeaderTrailer } from '../lsmt/format.ts';
import type { OpenedLayer } from './open.ts';

export interface HeaderInfo {
  flags: number;
  flagNames: string[];
  indexOffset: number;
  indexSize: number;
  virtualSize: number;
  uuid: string;
  parentUuid: string;
  version: string;
  userTag: string;
}

export interface LayerInfo {
  file: string;
  wrapping: string[];
  /** Size of the stored file (compressed/wrapped). */
  storedBytes: number;
  /** Size of the decoded LSMT layer in bytes (the file size when not compressed). */
  layerBytes: number;
  virtualSize: number;
  uuid: string;
  parentUuid: string;
  userTag: string;
  entries: number;
  indexEntriesOnDisk: number;
  dataEntries: number;
  zeroedEntries: number;
  /** Bytes of stored data (the data area). */
  dataBytes: number;
  /** Bytes of the index on disk (padding included). */
  indexBytes: number;
  /** Bytes of the virtual disk mapped to stored data. */
  mappedBytes: number;
  header: HeaderInfo;
  trailer: HeaderInfo;
}

function flagNames(f: number): string[] {
  const names: string[] = [];
  names.push(f & FLAG_HEADER ? 'header' : 'trailer');
  names.push(f & FLAG_DATA ? 'data' : 'index');
  if (f & FLAG_SEALED) names.push('sealed');
  if (f & FLAG_SPARSE) names.push('sparse');
  return names;
}

function headerInfo(h: HeaderTrailer): HeaderInfo {
  return {
    flags: h.flags,
    flagNames: flagNames(h.flags),
    indexOffset: h.indexOffset,
    indexSize: h.indexSize,
    virtualSize: h.virtualSize,
    uuid: h.uuid,
    parentUuid: h.parentUuid,
    version: `${h.version}.${h.subVersion}`,
    userTag: h.userTag,
  };
}

export function describeLayer(l: OpenedLayer, file: string): LayerInfo {
  let zeroed = 0;
  for (let i = 0; i < l.index.count; i++) zeroed += l.index.zeroed[i]!;
  return {
    file,
    wrapping: l.wrapping,
    storedBytes: l.storedBytes,
    layerBytes: l.source.size,
    virtualSize: l.virtualSize,
    uuid: l.uuid,
    parentUuid: l.parentUuid,
    userTag: l.trailer.userTag,
    entries: l.index.count,
    indexEntriesOnDisk: l.indexEntriesOnDisk,
    dataEntries: l.index.count - zeroed,
    zeroedEntries: zeroed,
    dataBytes: l.trailer.indexOffset - HT_SPACE,
    indexBytes: l.indexEntriesOnDisk * ENTRY_SIZE,
    mappedBytes: l.index.dataSectors() * SECTOR,
    header: headerInfo(l.header),
    trailer: headerInfo(l.trailer),
  };
}
