// A daemon's publish to a topic, in plain amqplib (no gateway code): each argument after
// the topic is one message's JSON body, published to the exchange gateway.topics with the
// topic as routing key, on a confirm channel; prints "published N".
//
//   GATEWAY_BROKER_URL=amqp://... node tests/node/publish_topic.mjs chat.room.7 '{"from":"n","text":"hi"}'
import { createRequire } from "node:module";

const require = createRequire(new URL("../../clients/js/package.json", import.meta.url));
const amqp = require("amqplib");

const [topic, ...bodies] = process.argv.slice(2);
const connection = await amqp.connect(process.env.GATEWAY_BROKER_URL);
const channel = await connection.createConfirmChannel();
for (const body of bodies) {
  channel.publish("gateway.topics", topic, Buffer.from(body), { contentType: "application/json" });
}
await channel.waitForConfirms();
await connection.close();
console.log(`published ${bodies.length}`);
