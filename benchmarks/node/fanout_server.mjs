// The outer reference of benchmarks/realtime_fanout.py: the seed's Socket.IO chat
// broadcast on the official Node.js `socket.io` server (installed from the npm registry
// into tests/node/node_modules by `make testdeps`; never committed).
//
// Usage: node fanout_server.mjs PORT   (prints "ready" once it listens on 127.0.0.1)
import { createServer } from "node:http";
import { createRequire } from "node:module";

const require = createRequire(new URL("../../tests/node/package.json", import.meta.url));
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const httpServer = createServer();
const io = new Server(httpServer, { serveClient: false });
let counter = 0;

// Like the seed: a token is required (not verified, as in the seed's stub).
io.use((socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  if (!token) return next(new Error("no token"));
  socket.data.userId = token;
  socket.data.username = token;
  return next();
});

io.on("connection", (socket) => {
  socket.on("room:join", (roomId) => {
    socket.join(roomId);
    socket.emit("room:joined", { roomId, users: [socket.data.userId] });
  });
  socket.on("chat:message", (data) => {
    const { roomId, message, type = "text" } = data;
    counter += 1;
    const messageData = {
      id: `${Date.now()}-${counter}`,
      userId: socket.data.userId,
      username: socket.data.username,
      message,
      type,
      timestamp: new Date(),
      roomId,
    };
    io.to(roomId).emit("chat:message", messageData);
    socket.emit("chat:message:sent", { messageId: messageData.id });
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  process.stdout.write("ready\n");
});
