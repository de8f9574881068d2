// Connection state recovery with the official socket.io-client: a listener in a room
// while a sender sends `count` messages; the listener's engine is closed before the
// messages at `cuts` and it reconnects (through `listenUrl`, maybe a proxy that sends
// it to another instance). Prints one JSON object: every connect (id, recovered), every
// message received with its offset, and what the sender saw of the listener's presence.
//
// Usage: node recovery.mjs '<json config>'
//   {"listenUrl", "senderUrl", "token", "senderToken", "count", "cuts": [i, ...],
//    "join": {"event", "data"}, "send": {"event", "data"}, "listen": "event",
//    "reconnectMs": 100, "watch": ["user:left", ...], "settleMs": 300, "window": 1,
//    "others": [{"url", "token"}, ...], "drainBeforeCut": false}
import { io } from "socket.io-client";

const config = JSON.parse(process.argv[2]);
const TIMEOUT_MS = config.timeoutMs ?? 60000;
const result = { connects: [], received: [], offsets: [], errors: [], watched: [], pids: [] };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function until(check, what) {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      if (check()) return resolve();
      if (Date.now() - start > TIMEOUT_MS) return reject(new Error(`no ${what} in ${TIMEOUT_MS} ms`));
      setTimeout(tick, 5);
    };
    tick();
  });
}

function client(url, token, reconnection) {
  const delay = config.reconnectMs ?? 100;
  return io(url, {
    auth: { token },
    transports: ["websocket"],
    forceNew: true,
    reconnection,
    reconnectionDelay: delay,
    reconnectionDelayMax: delay,
    randomizationFactor: 0,
  });
}

async function main() {
  const listener = client(config.listenUrl, config.token, true);
  listener.on("connect", () => {
    result.connects.push({ id: listener.id, recovered: listener.recovered });
    result.pids.push(listener._pid);
  });
  listener.on("connect_error", (error) => result.errors.push(error.message));
  listener.on(config.listen, (payload, offset) => {
    result.received.push(payload.message);
    result.offsets.push(offset);
  });
  await until(() => result.connects.length === 1, "connect");
  await listener.emitWithAck(config.join.event, config.join.data);

  const sender = client(config.senderUrl, config.senderToken, false);
  for (const event of config.watch ?? []) {
    sender.on(event, (payload) => result.watched.push({ event, userId: payload.userId }));
  }
  await until(() => sender.connected, "sender connect");
  if (config.join.sender !== false) await sender.emitWithAck(config.join.event, config.join.data);
  // others sending meanwhile (another instance, say): their messages are "<n>:<i>"
  const others = [];
  for (const [n, other] of (config.others ?? []).entries()) {
    const socket = client(other.url, other.token, false);
    await until(() => socket.connected, "other sender connect");
    if (config.join.sender !== false) await socket.emitWithAck(config.join.event, config.join.data);
    others.push(
      (async () => {
        for (let start = 0; start < config.count; start += config.window ?? 1) {
          const acks = [];
          for (let i = start; i < Math.min(start + (config.window ?? 1), config.count); i += 1) {
            const data = { ...config.send.data, message: `${n + 1}:${i}` };
            acks.push(socket.emitWithAck(config.send.event, data));
          }
          for (const ack of await Promise.all(acks)) {
            if (ack && ack.ok === false) throw new Error(`other send: ${JSON.stringify(ack)}`);
          }
        }
        socket.disconnect();
      })(),
    );
  }

  // up to `window` messages in flight (the server may handle those out of order: the
  // test checks the order of the offsets, which is the order the server sent them in)
  const window = config.window ?? 1;
  let inFlight = [];
  const settle = async () => {
    for (const ack of await Promise.all(inFlight)) {
      if (ack && ack.ok === false) throw new Error(`send: ${JSON.stringify(ack)}`);
    }
    inFlight = [];
  };
  let cut = 0;
  for (let i = 0; i < config.count; i += 1) {
    if (config.cuts.includes(i)) {
      await settle();
      // one cut at a time: the previous reconnection is done first
      await until(() => result.connects.length === cut + 1 && listener.connected, "reconnect");
      // an ack means the server sent the message, not that it reached the listener (on
      // Redis it crosses pub/sub first): a test that must not lose any to the cut waits
      if (config.drainBeforeCut) await until(() => result.received.length >= i, `${i} messages`);
      listener.io.engine.close();
      cut += 1;
    }
    const data = { ...config.send.data, message: String(i) };
    inFlight.push(sender.emitWithAck(config.send.event, data));
    if (inFlight.length >= window) await settle();
  }
  await settle();
  await Promise.all(others);
  for (const i of config.cuts) {
    if (i >= config.count) {
      await until(() => result.connects.length === cut + 1 && listener.connected, "reconnect");
      listener.io.engine.close();
      cut += 1;
    }
  }
  await until(() => result.connects.length === cut + 1 && listener.connected, "last reconnect");
  if (config.expectAll !== false) {
    const total = config.count * (1 + others.length);
    await until(() => result.received.length >= total, `${total} messages`);
  }
  await sleep(config.settleMs ?? 300); // a duplicate would arrive now
  result.finalId = listener.id;
  listener.disconnect();
  sender.disconnect();
}

main()
  .catch((error) => {
    result.error = String(error && error.stack ? error.stack : error);
  })
  .finally(() => {
    console.log(JSON.stringify(result));
    process.exit(0);
  });
