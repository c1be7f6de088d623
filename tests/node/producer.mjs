// A seed 003 style producer: enqueue N jobs on a BullMQ queue, wait for each with
// waitUntilFinished, print one JSON summary line. Used by tests/acceptance/test_bullmq_node.py.
//
//   node producer.mjs REDIS_URL PREFIX QUEUE COUNT
import { Queue, QueueEvents } from 'bullmq';

const [redisUrl, prefix, queueName, countArg] = process.argv.slice(2);
const url = new URL(redisUrl);
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number(url.pathname.slice(1) || 0),
};
const count = Number(countArg);
const queue = new Queue(queueName, { connection, prefix });
const events = new QueueEvents(queueName, { connection, prefix });
queue.setMaxListeners(count + 10);
events.setMaxListeners(count + 10);
await events.waitUntilReady();

let progressEvents = 0;
events.on('progress', () => { progressEvents += 1; });

const jobs = [];
for (let i = 0; i < count; i += 1) {
  jobs.push(await queue.add('generate', { prompt: `lighthouse number ${i}`, width: 64, height: 64 }));
}
console.log(JSON.stringify({ added: jobs.length }));

const settled = await Promise.allSettled(jobs.map((job) => job.waitUntilFinished(events, 180_000)));
const results = [];
const failed = [];
settled.forEach((outcome, i) => {
  if (outcome.status === 'fulfilled') {
    const value = outcome.value;
    results.push({ jobId: jobs[i].id, generationId: value.generationId, imageUrls: value.imageUrls, images: value.images });
  } else {
    failed.push({ jobId: jobs[i].id, reason: String(outcome.reason && outcome.reason.message) });
  }
});
console.log(JSON.stringify({ completed: results.length, failed, results, progressEvents }));
await events.close();
await queue.close();
