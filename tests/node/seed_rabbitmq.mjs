// Runs the seed chapter's own Node RabbitMQ classes (RabbitMQService, MessageProducer,
// MessageConsumer), unchanged, on amqplib, as the Node half of rtkit's interop tests.
//
// The classes are read at run time from the seed chapter (they are not part of rtkit);
// only what their code takes from require() is provided: amqplib, and uuid's v4 (as
// crypto.randomUUID). The steps of the JSON config run in order; each step's outcome is
// recorded, and one JSON object is printed on stdout at the end.
//
// Usage: node seed_rabbitmq.mjs SEED_MARKDOWN '<json config>'
//   config: {"url", "steps": [step, ...]}, each step one of
//     {"do": "consumeWithDLX", "queue"}            the chapter's DLX topology (its consumer is
//                                                  cancelled at once: rtkit consumes)
//     {"do": "createQueue", "queue", "options"}    RabbitMQService.createQueue
//     {"do": "send", "queue", "message", "options"} MessageProducer.sendToQueue
//     {"do": "failOnce", "queue"}                  consumeQueue with retryOnError: the handler
//                                                  fails once, the chapter's handleRetry
//                                                  republishes with x-retry-count + 1
//     {"do": "receive", "queue", "count"}          consumeQueue until `count` messages came
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import amqp from "amqplib";

const [seedPath, rawConfig] = process.argv.slice(2);
const config = JSON.parse(rawConfig);
const TIMEOUT_MS = 15000;

// The seed logs with console.log/console.error: keep stdout for the JSON result.
const logged = [];
console.log = (...args) => logged.push(args.map(String).join(" "));
console.error = (...args) => logged.push(args.map((a) => (a && a.message) || String(a)).join(" "));

function loadSeedClasses() {
  const chapter = readFileSync(seedPath, "utf8");
  const start = chapter.indexOf("class RabbitMQService {");
  const end = chapter.indexOf("// 具体业务消息处理器", start);
  if (start < 0 || end < 0) throw new Error("RabbitMQService not found in the seed");
  const body = `${chapter.slice(start, end)}
return { RabbitMQService, MessageProducer, MessageConsumer };`;
  return new Function("amqp", "uuidv4", body)(amqp, randomUUID);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function received(msg) {
  return {
    content: JSON.parse(msg.content.toString()),
    headers: msg.properties.headers || {},
    messageId: msg.properties.messageId,
    persistent: msg.properties.deliveryMode === 2,
    routingKey: msg.fields.routingKey,
  };
}

async function receive(rabbit, consumer, step) {
  const got = [];
  let done;
  const finished = new Promise((resolve) => {
    done = resolve;
  });
  const { consumerTag } = await consumer.consumeQueue(step.queue, async (content, msg) => {
    got.push(received(msg));
    if (got.length >= step.count) done();
  });
  await Promise.race([finished, sleep(TIMEOUT_MS)]);
  await rabbit.channel.cancel(consumerTag);
  return got;
}

async function failOnce(rabbit, consumer, step) {
  let seen = null;
  const handled = new Promise((resolve) => {
    consumer.consumeQueue(
      step.queue,
      async (content, msg) => {
        if (seen) throw new Error("node handler failed"); // a second one raced in
        seen = received(msg);
        await rabbit.channel.cancel(msg.fields.consumerTag); // rtkit continues from here
        setTimeout(resolve, 200); // after handleRetry republished and acked
        throw new Error("node handler failed");
      },
      { retryOnError: true, prefetch: 1 },
    );
  });
  await Promise.race([handled, sleep(TIMEOUT_MS)]);
  return seen;
}

async function run(step, rabbit, producer, consumer) {
  switch (step.do) {
    case "consumeWithDLX": {
      const { consumerTag } = await consumer.consumeWithDLX(step.queue, async () => {});
      await rabbit.channel.cancel(consumerTag);
      return { ok: true };
    }
    case "createQueue":
      return await rabbit.createQueue(step.queue, step.options || {});
    case "send":
      return { sent: await producer.sendToQueue(step.queue, step.message, step.options || {}) };
    case "failOnce":
      return await failOnce(rabbit, consumer, step);
    case "receive":
      return await receive(rabbit, consumer, step);
    default:
      throw new Error(`unknown step ${step.do}`);
  }
}

const result = { steps: [], logged };
try {
  const { RabbitMQService, MessageProducer, MessageConsumer } = loadSeedClasses();
  const rabbit = new RabbitMQService({ url: config.url });
  await rabbit.connect();
  if (!rabbit.channel) throw new Error("the seed's RabbitMQService did not connect");
  // The seed crashes on a channel error nobody listens to; record it instead.
  rabbit.channel.on("error", (error) => logged.push(`channel error: ${error.message}`));
  const producer = new MessageProducer(rabbit);
  const consumer = new MessageConsumer(rabbit);
  for (const step of config.steps) {
    try {
      result.steps.push(await run(step, rabbit, producer, consumer));
    } catch (error) {
      result.steps.push({ error: error.message });
      break;
    }
  }
  rabbit.retryCount = rabbit.maxRetries; // no reconnect after our own disconnect
  await rabbit.disconnect();
} catch (error) {
  result.error = error.stack || String(error);
}
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
