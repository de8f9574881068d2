// Runs the seed's own browser ChatClient class, unchanged, against an rtkit server.
//
// The class is read at run time from the seed chapter (it is not part of rtkit); only
// the global `io` it calls is provided: the official socket.io-client, pointed at the
// rtkit server instead of the hard-coded http://localhost:3000. Its on* hooks are
// replaced per instance to record what arrives. Prints one JSON object on stdout.
//
// Usage: node seed_client.mjs SEED_MARKDOWN '<json config>'
//   config: {"url", "room", "alice": {"token", "userId"}, "bob": {...}, "badToken"}
import { readFileSync } from "node:fs";
import { io as officialIo } from "socket.io-client";

const [seedPath, rawConfig] = process.argv.slice(2);
const config = JSON.parse(rawConfig);
const TIMEOUT_MS = 15000;

// The seed logs with console.log/console.error: keep stdout for the JSON result.
const logged = [];
console.log = (...args) => logged.push(args.map(String).join(" "));
console.error = (...args) => logged.push(args.map((a) => (a && a.message) || String(a)).join(" "));

function loadSeedChatClient() {
  const chapter = readFileSync(seedPath, "utf8");
  const start = chapter.indexOf("class ChatClient {");
  const end = chapter.indexOf("// 使用示例", start);
  if (start < 0 || end < 0) throw new Error("ChatClient not found in the seed");
  const io = (_url, options) =>
    officialIo(config.url, { ...options, transports: ["websocket"], reconnection: false });
  return new Function("io", `${chapter.slice(start, end)}\nreturn ChatClient;`)(io);
}

const HOOKS = [
  "onUserJoined",
  "onUserLeft",
  "onOnlineUsers",
  "onRoomJoined",
  "onRoomUserJoined",
  "onRoomUserLeft",
  "onChatMessage",
  "onMessageSent",
  "onTypingStart",
  "onTypingStop",
  "onNotificationReceived",
];

function recording(ChatClient) {
  const client = new ChatClient();
  client.seen = [];
  for (const hook of HOOKS) {
    const original = client[hook].bind(client);
    client[hook] = (data) => {
      client.seen.push({ hook, data });
      original(data); // the seed's own handler (it sets currentRoom on onRoomJoined)
    };
  }
  return client;
}

function waitFor(client, hook, match = () => true) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + TIMEOUT_MS;
    const poll = () => {
      const hit = client.seen.find((entry) => entry.hook === hook && match(entry.data));
      if (hit) return resolve(hit.data);
      if (Date.now() > deadline) return reject(new Error(`no ${hook} within ${TIMEOUT_MS} ms`));
      setTimeout(poll, 10);
    };
    poll();
  });
}

async function main() {
  const result = {};
  const clients = [];
  try {
    const ChatClient = loadSeedChatClient();
    const { room } = config;

    // A bad token: the seed's client only logs the connect_error.
    const intruder = new ChatClient();
    clients.push(intruder);
    intruder.connect(config.badToken);
    result.refused = await new Promise((resolve) => {
      intruder.socket.once("connect_error", (err) => resolve(err.message));
    });

    const alice = recording(ChatClient);
    const bob = recording(ChatClient);
    clients.push(alice, bob);
    alice.connect(config.alice.token);
    result.aliceOnline = await waitFor(alice, "onOnlineUsers");
    bob.connect(config.bob.token);
    result.aliceSawBob = await waitFor(alice, "onUserJoined", (d) => d.userId === config.bob.userId);

    alice.joinRoom(room);
    result.aliceJoined = await waitFor(alice, "onRoomJoined");
    bob.joinRoom(room);
    result.bobJoined = await waitFor(bob, "onRoomJoined");
    result.aliceSawBobInRoom = await waitFor(alice, "onRoomUserJoined");
    result.currentRoom = alice.currentRoom;

    alice.startTyping(room);
    alice.startTyping(room); // the is-typing guard sends only one typing:start
    result.typingStart = await waitFor(bob, "onTypingStart");
    alice.stopTyping(room);
    result.typingStop = await waitFor(bob, "onTypingStop");

    alice.sendMessage(room, "Hello World!");
    result.bobMessage = await waitFor(bob, "onChatMessage");
    result.aliceMessage = await waitFor(alice, "onChatMessage");
    result.aliceSent = await waitFor(alice, "onMessageSent");

    bob.sendNotification(config.alice.userId, "mention", "look at room " + room);
    result.notification = await waitFor(alice, "onNotificationReceived");

    bob.leaveRoom(room);
    result.aliceSawBobLeaveRoom = await waitFor(alice, "onRoomUserLeft");
    bob.disconnect();
    result.aliceSawBobLeave = await waitFor(alice, "onUserLeft");

    result.typingStarts = bob.seen.filter((e) => e.hook === "onTypingStart").length;
  } catch (err) {
    result.error = String(err && err.message ? err.message : err);
  } finally {
    for (const client of clients) client.disconnect();
  }
  result.logged = logged;
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
}

main();
