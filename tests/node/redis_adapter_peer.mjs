// A Node Socket.IO server with @socket.io/redis-adapter (ioredis), and socket.io-client
// clients, driven by tests/realtime/test_node_adapter.py: one JSON command per line on
// stdin, one JSON answer per line on stdout ({"id": <the command's id>, "result"|"error"}).
//
// Usage: node redis_adapter_peer.mjs '{"redis": "redis://127.0.0.1:6379/0", "key": "...",
//                                      "specific": false}'  (publishOnSpecificResponseChannel)
// The first line printed is {"ready": true, "url": "http://127.0.0.1:PORT", "uid": "..."}.
import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { Server } from "socket.io";
import { io as connect } from "socket.io-client";
import { createAdapter } from "@socket.io/redis-adapter";
import { Redis } from "ioredis";

const config = JSON.parse(process.argv[2]);
const TIMEOUT_MS = 10000;

const pub = new Redis(config.redis);
const sub = pub.duplicate();
const httpServer = createServer();
const server = new Server(httpServer, {
  adapter: createAdapter(pub, sub, {
    key: config.key,
    requestsTimeout: 3000,
    publishOnSpecificResponseChannel: Boolean(config.specific),
  }),
});

// Server side: a socket joins the rooms its handshake names, its data says who it is,
// and it answers the "echo" event it gets (from another server) with an ack.
server.on("connection", (socket) => {
  socket.join(socket.handshake.auth.rooms || []);
  socket.data = { side: "node", name: socket.handshake.auth.name };
});
const serverEvents = [];
server.on("hello", (...args) => {
  const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
  serverEvents.push(args);
  if (ack) ack({ from: "node", got: args });
});

// Clients (of this Node server or of the rtkit server) record every event they get,
// and answer an event that asks for an ack with {ackFrom: name, args}.
const clients = new Map();

function record(name, socket) {
  const log = [];
  socket.onAny((event, ...args) => {
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
    log.push({ event, args: args.map(plain) });
    if (ack) ack({ ackFrom: name, args: args.map(plain) });
  });
  socket.on("disconnect", (reason) => log.push({ event: "<disconnect>", args: [reason] }));
  return log;
}

// Buffers as {bytes: [..]} so that the test can tell them apart from arrays.
function plain(value) {
  if (Buffer.isBuffer(value) || value instanceof ArrayBuffer) {
    return { bytes: [...Buffer.from(value)] };
  }
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

function revive(value) {
  if (Array.isArray(value)) return value.map(revive);
  if (value && typeof value === "object") {
    if (Array.isArray(value.bytes)) return Buffer.from(value.bytes);
    if (typeof value.date === "string") return new Date(value.date);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, revive(v)]));
  }
  return value;
}

function target(spec = {}) {
  let op = server;
  if (spec.to) op = op.to(spec.to);
  if (spec.except) op = op.except(spec.except);
  return op;
}

const commands = {
  async client({ name, url, auth }) {
    const socket = connect(url || `http://127.0.0.1:${httpServer.address().port}`, {
      auth: auth || {},
      transports: ["websocket"],
      reconnection: false,
      forceNew: true,
    });
    const log = record(name, socket);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name}: no connect`)), TIMEOUT_MS);
      socket.once("connect", () => resolve(clearTimeout(timer)));
      socket.once("connect_error", (err) => reject(new Error(`${name}: ${err.message}`)));
    });
    clients.set(name, { socket, log });
    return { id: socket.id };
  },
  async clientEmit({ name, event, args }) {
    clients.get(name).socket.emit(event, ...revive(args || []));
    return null;
  },
  async events({ name }) {
    return clients.get(name).log;
  },
  async emit({ event, args, ...spec }) {
    target(spec).emit(event, ...revive(args || []));
    return null;
  },
  async emitWithAck({ event, args, ...spec }) {
    return await target(spec).timeout(3000).emitWithAck(event, ...revive(args || []));
  },
  async fetchSockets(spec) {
    const sockets = await target(spec).fetchSockets();
    return sockets.map((s) => ({ id: s.id, rooms: [...s.rooms], data: s.data, handshake: s.handshake }));
  },
  async allRooms() {
    return [...(await server.of("/").adapter.allRooms())];
  },
  async serverCount() {
    return await server.of("/").adapter.serverCount();
  },
  async serverSideEmit({ event, args, ack }) {
    if (ack) return await server.serverSideEmitWithAck(event, ...(args || []));
    server.serverSideEmit(event, ...(args || []));
    return null;
  },
  async serverEvents() {
    return serverEvents;
  },
  async socketsJoin({ rooms, ...spec }) {
    target(spec).socketsJoin(rooms);
    return null;
  },
  async socketsLeave({ rooms, ...spec }) {
    target(spec).socketsLeave(rooms);
    return null;
  },
  async disconnectSockets(spec) {
    target(spec).disconnectSockets();
    return null;
  },
  async localRooms({ sid }) {
    const socket = server.of("/").sockets.get(sid);
    return socket ? [...socket.rooms] : null;
  },
  async quit() {
    for (const { socket } of clients.values()) socket.close();
    server.close();
    pub.disconnect();
    sub.disconnect();
    setTimeout(() => process.exit(0), 50);
    return null;
  },
};

httpServer.listen(0, "127.0.0.1", () => {
  const uid = server.of("/").adapter.uid;
  const url = `http://127.0.0.1:${httpServer.address().port}`;
  // (the adapter subscribes asynchronously: wait until Redis counts it)
  const ready = async () => {
    while ((await server.of("/").adapter.serverCount()) < 1) {
      await new Promise((r) => setTimeout(r, 20));
    }
    process.stdout.write(JSON.stringify({ ready: true, url, uid }) + "\n");
  };
  ready();
});

createInterface({ input: process.stdin }).on("line", async (line) => {
  const { id, cmd, ...args } = JSON.parse(line);
  try {
    const result = await commands[cmd](args);
    process.stdout.write(JSON.stringify({ id, result: plain(result ?? null) }) + "\n");
  } catch (err) {
    process.stdout.write(JSON.stringify({ id, error: String(err && err.message) }) + "\n");
  }
});
