// Drives an rtkit server with the official socket.io-client, the way the seed's
// browser ChatClient does (auth token in the handshake, room:join with a bare room id,
// fire-and-forget emits), and prints what it saw as one JSON object on stdout.
//
// Usage: node interop.mjs '<json config>'
//   {"url": "http://127.0.0.1:PORT", "room": "...",
//    "alice": {"token": "...", "userId": "..."}, "bob": {"token": "...", "userId": "..."},
//    "badToken": "...", "expiredToken": "..."}
import { io } from "socket.io-client";

const config = JSON.parse(process.argv[2]);
const TIMEOUT_MS = 15000;
const result = { steps: [] };

function step(name, value) {
  result.steps.push(name);
  result[name] = value;
}

// A client like the seed's ChatClient: records every event it receives.
function client(token, label) {
  const socket = io(config.url, {
    auth: token === undefined ? {} : { token },
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
  });
  socket.label = label;
  socket.log = [];
  socket.onAny((event, ...args) => socket.log.push({ event, data: args[0] }));
  return socket;
}

// Resolves with the first payload of `event` (received from now on, or already logged
// after index `from`) that satisfies `match`.
function waitFor(socket, event, match = () => true, from = socket.log.length) {
  return new Promise((resolve, reject) => {
    const done = (data) => {
      clearTimeout(timer);
      socket.off(event, listener);
      resolve(data);
    };
    const listener = (data) => {
      if (match(data)) done(data);
    };
    const timer = setTimeout(() => {
      socket.off(event, listener);
      reject(new Error(`${socket.label}: no ${event} within ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    for (const entry of socket.log.slice(from)) {
      if (entry.event === event && match(entry.data)) return done(entry.data);
    }
    socket.on(event, listener);
  });
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${socket.label}: no connect`)), TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(new Error(`${socket.label}: connect_error ${err.message}`));
    });
  });
}

function refused(socket) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${socket.label}: not refused`)), TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      reject(new Error(`${socket.label}: connected with a bad token`));
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      socket.close();
      resolve({ message: err.message, data: err.data ?? null, active: socket.active });
    });
  });
}

// Silence: resolves with the payloads of `event` received in the next `ms` milliseconds.
async function quietFor(socket, event, ms) {
  const from = socket.log.length;
  await new Promise((resolve) => setTimeout(resolve, ms));
  return socket.log.slice(from).filter((e) => e.event === event).map((e) => e.data);
}

async function main() {
  const { room } = config;
  const sockets = [];
  try {
    // Handshake refusals: the seed's client only sees connect_error.
    step("badToken", await refused(client(config.badToken, "bad")));
    step("noToken", await refused(client(undefined, "none")));
    step("expiredToken", await refused(client(config.expiredToken, "expired")));

    const alice = client(config.alice.token, "alice");
    sockets.push(alice);
    const aliceOnline = waitFor(alice, "users:online", () => true, 0);
    await connected(alice);
    step("aliceUsersOnline", await aliceOnline);

    const bob = client(config.bob.token, "bob");
    sockets.push(bob);
    const bobArrives = waitFor(alice, "user:joined", (d) => d.userId === config.bob.userId);
    await connected(bob);
    step("aliceSawBobJoin", await bobArrives);
    step("bobUsersOnline", await waitFor(bob, "users:online", () => true, 0));

    // room:join with a bare string and no ack, exactly as ChatClient.joinRoom does.
    let joined = waitFor(alice, "room:joined", (d) => d.roomId === room);
    alice.emit("room:join", room);
    step("aliceRoomJoined", await joined);
    const bobInRoom = waitFor(alice, "room:user:joined", (d) => d.userId === config.bob.userId);
    joined = waitFor(bob, "room:joined", (d) => d.roomId === room);
    bob.emit("room:join", room);
    step("bobRoomJoined", await joined);
    step("aliceSawBobInRoom", await bobInRoom);

    // Typing, with the seed's is-typing guard on the sending side.
    let typing = waitFor(bob, "typing:start", (d) => d.roomId === room);
    alice.emit("typing:start", { roomId: room });
    step("bobSawTypingStart", await typing);
    typing = waitFor(bob, "typing:stop", (d) => d.roomId === room);
    alice.emit("typing:stop", { roomId: room });
    step("bobSawTypingStop", await typing);
    step("typingEchoedToSender", alice.log.filter((e) => e.event.startsWith("typing:")).length);

    // chat:message without an ack (seed style): the whole room gets it, the sender also
    // gets chat:message:sent with the same id.
    const text = "hello from node <b>not bold</b>";
    const aliceGets = waitFor(alice, "chat:message", (d) => d.message === text);
    const bobGets = waitFor(bob, "chat:message", (d) => d.message === text);
    const sent = waitFor(alice, "chat:message:sent");
    alice.emit("chat:message", { roomId: room, message: text, type: "text" });
    step("aliceGotMessage", await aliceGets);
    step("bobGotMessage", await bobGets);
    step("aliceMessageSent", await sent);

    // The same with an ack (rtkit's additive acks).
    step(
      "ackedMessage",
      await bob.timeout(TIMEOUT_MS).emitWithAck("chat:message", { roomId: room, message: "with ack" }),
    );

    // History, with an ack: oldest first.
    step(
      "history",
      await alice.timeout(TIMEOUT_MS).emitWithAck("chat:history", { roomId: room, limit: 10 }),
    );

    // Notifications go to every connection of the target user.
    const notified = waitFor(alice, "notification:received", (d) => d.type === "mention");
    bob.emit("notification:send", {
      targetUserId: config.alice.userId,
      type: "mention",
      content: { text: "look at this", roomId: room },
    });
    step("aliceNotified", await notified);

    // File transfer: announce on the socket, send the bytes over HTTP, the room is told.
    const announced = waitFor(bob, "file:upload:start", (d) => d.roomId === room);
    const ready = waitFor(alice, "file:upload:ready");
    const body = "hello file <script>";
    alice.emit("file:upload:start", {
      roomId: room,
      fileName: "notes <1>.txt",
      fileSize: Buffer.byteLength(body),
    });
    step("bobSawUploadStart", await announced);
    step("aliceUploadReady", await ready);
    const complete = waitFor(bob, "file:upload:complete", (d) => d.roomId === room);
    const put = await fetch(`${config.url}/api/uploads/${result.aliceUploadReady.uploadId}`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${config.alice.token}` },
      body,
    });
    step("uploadStatus", put.status);
    step("bobSawUploadComplete", await complete);
    const download = await fetch(new URL(result.bobSawUploadComplete.url, config.url), {
      headers: { Authorization: `Bearer ${config.bob.token}` },
    });
    step("download", { status: download.status, body: await download.text() });

    // Game moves go to the others.
    const moved = waitFor(bob, "game:move");
    alice.emit("game:move", { roomId: room, move: { from: "e2", to: "e4" } });
    step("bobSawMove", await moved);

    // Bad payloads: an error ack when asked for one, an `error` event otherwise; the
    // connection stays up and nothing reaches the room.
    step(
      "badPayloadAck",
      await alice.timeout(TIMEOUT_MS).emitWithAck("chat:message", { roomId: 42, message: "x" }),
    );
    const errorEvent = waitFor(alice, "error");
    alice.emit("chat:message", { roomId: room });
    step("badPayloadError", await errorEvent);
    step(
      "notMemberAck",
      await alice
        .timeout(TIMEOUT_MS)
        .emitWithAck("chat:message", { roomId: `${room}-other`, message: "intruder" }),
    );
    step("bobQuietAfterBadPayloads", await quietFor(bob, "chat:message", 300));
    step("aliceStillConnected", alice.connected);

    // Leaving: the others in the room are told.
    const left = waitFor(bob, "room:user:left", (d) => d.userId === config.alice.userId);
    alice.emit("room:leave", room);
    step("bobSawAliceLeaveRoom", await left);

    // Disconnect: user:left to the others once the user's last connection is gone.
    const gone = waitFor(alice, "user:left", (d) => d.userId === config.bob.userId);
    bob.disconnect();
    step("aliceSawBobLeave", await gone);
  } catch (err) {
    result.error = String(err && err.message ? err.message : err);
  } finally {
    for (const socket of sockets) socket.disconnect();
  }
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
}

main();
