/**
 * The lowest CPU priority for the calling thread (Linux applies both per thread): nice 19,
 * and where permitted the SCHED_IDLE policy, under which any normal thread that wakes up
 * preempts this one at once. Nice 19 alone still lets a busy background thread finish its
 * time slice (up to a few milliseconds) before a woken serving thread runs; SCHED_IDLE
 * does not. sched_setscheduler goes to libc (./libc.ts).
 */
import os from 'node:os';
import { libc } from './libc.ts';

const SCHED_IDLE = 5;

export interface AppliedPriority {
  nice: number | undefined;
  idle: boolean;
}

/** Lowers this thread to nice `nice` and, with `idle`, SCHED_IDLE; says what it got (either may be refused). */
export function lowerThreadPriority(nice: number, idle: boolean): AppliedPriority {
  const got: AppliedPriority = { nice: undefined, idle: false };
  try {
    // pid 0: this thread only.
    os.setPriority(0, nice);
    got.nice = nice;
  } catch {
    // Not permitted: stay at the inherited value.
  }
  if (idle && process.platform === 'linux') {
    try {
      const setScheduler = libc('SCHED_IDLE').lib.func('int sched_setscheduler(int pid, int policy, const int *param)');
      got.idle = setScheduler(0, SCHED_IDLE, [0]) === 0;
    } catch {
      // No FFI here: nice alone.
    }
  }
  return got;
}
