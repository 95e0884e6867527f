/** Messages between the fuzz runner and its worker thread. */
import type { CaseClass } from './target.ts';

export type ToWorker =
  | { type: 'init'; readCap: number; tmpRoot: string }
  | { type: 'load'; target: string }
  | { type: 'case'; target: string; runSeed: string; caseNo: number }
  | { type: 'close' };

export type ToRunner =
  | { type: 'ready'; tmp: string }
  | { type: 'loaded'; target: string; seeds: number }
  | { type: 'result'; target: string; caseNo: number; cls: CaseClass; detail: string; seed: string; ops: string[]; ms: number }
  | { type: 'late'; target: string; caseNo: number; detail: string }
  | { type: 'fatal'; detail: string }
  | { type: 'closed' };
