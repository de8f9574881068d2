// Type-checked by tests/telemetry/test_typescript.py against the module `rtkit asyncapi
// --format typescript` writes (next to this file as rtkit-chat.ts, in a temporary folder):
// the events, payloads and acks a client may send, and what tsc must refuse.
import { io, Socket } from "socket.io-client";
import type { ChatMessage, ClientToServerEvents, ServerToClientEvents } from "./rtkit-chat.js";

const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io("http://127.0.0.1:8000", {
  auth: { token: "t" },
  autoConnect: false,
});
socket.on("chat:message", (message: ChatMessage) => {
  const room: string = message.roomId;
  void room;
});
socket.on("users:online", (users) => users.map((u) => u.joinTime));
// with connection state recovery on, a handler may read the event's offset
socket.on("room:user:joined", (joined, offset) => {
  const last: string | undefined = offset;
  void [joined.userId, last];
});
socket.emit("chat:message", { roomId: "lobby", message: "hi" }, (reply) => {
  const id: string = reply.ok ? reply.messageId : reply.error.code;
  void id;
});
socket.emit("room:join", "lobby");
async function history(): Promise<number> {
  const reply = await socket.emitWithAck("chat:history", { roomId: "lobby", limit: 10 });
  return reply.ok ? reply.messages.length : 0;
}
void history;
// @ts-expect-error roomId is a string
socket.emit("chat:message", { roomId: 1, message: "hi" });
// @ts-expect-error no such event
socket.emit("chat:mesage", { roomId: "lobby", message: "hi" });
// @ts-expect-error the server sends no such event
socket.on("chat:deleted", () => {});
