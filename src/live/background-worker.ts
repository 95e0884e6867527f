/**
 * The snapshot thread (background.ts starts it): runs commit and push jobs (jobs.ts) one at
 * a time at the lowest CPU priority, and cancels the running one when told.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { errnoOf } from '../io/errors.ts';
import { lowerThreadPriority } from '../io/priority.ts';
import { cancelled, commitJob, pushJob, type Jobs } from './jobs.ts';

export type JobRequest = { [K in keyof Jobs]: { id: number; kind: K; job: Jobs[K]['job'] } }[keyof Jobs] | { cancel: true };
export type JobReply = { id: number; result: unknown } | { id: number; error: { name: string; message: string; errno: string } };
export interface WorkerSettings {
  compileCache?: string;
  nice: number;
  idle: boolean;
}

const settings = workerData as WorkerSettings;
lowerThreadPriority(settings.nice, settings.idle);

let abort = new AbortController();
let running = 0;
let queue = Promise.resolve();

parentPort!.on('message', (m: JobRequest) => {
  if ('cancel' in m) {
    if (running > 0) abort.abort(cancelled());
    return;
  }
  running++;
  queue = queue.then(async () => {
    let reply: JobReply;
    try {
      const result = m.kind === 'commit' ? await commitJob(m.job, abort.signal) : await pushJob(m.job, abort.signal);
      reply = { id: m.id, result };
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      reply = { id: m.id, error: { name: err.name, message: err.message, errno: errnoOf(e) } };
    }
    // A cancel reaches the jobs sent before it; later ones start afresh.
    if (--running === 0 && abort.signal.aborted) abort = new AbortController();
    parentPort!.postMessage(reply);
  });
});
