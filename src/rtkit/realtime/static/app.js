// rtkit chat page: plain JavaScript, no build step.
// Everything received from the network is shown with textContent, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const DEMO = document.body.dataset.demo === "true";
  const HISTORY_LIMIT = 50;
  const TYPING_IDLE_MS = 2000; // stop typing after this long without a keystroke
  const TYPING_STALE_MS = 8000; // forget a remote typist who never sent typing:stop
  const ONLINE_REFRESH_MS = 15000;
  const TOKEN_KEY = "rtkit.token";

  const state = {
    socket: null,
    token: null,
    userId: null,
    username: null,
    room: null,
    isTyping: false,
    typingRoom: null,
    typingTimer: null,
    refreshTimer: null,
    online: new Map(), // userId -> username
    roomUsers: new Map(), // userId -> username
    typists: new Map(), // userId -> {username, timer}
    seen: new Set(), // message ids shown in the current room
  };

  // ---------------------------------------------------------------- helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function asText(value) {
    if (value === undefined || value === null) return "";
    if (typeof value === "string") return value;
    try {
      return JSON.stringify(value);
    } catch (_err) {
      return String(value);
    }
  }

  function toDate(value) {
    if (typeof value === "number") return new Date(value < 1e12 ? value * 1000 : value);
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function formatTime(value) {
    const date = toDate(value);
    if (!date) return "";
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function describeError(err) {
    if (!err) return "unknown error";
    if (typeof err === "string") return err;
    const detail = err.error && typeof err.error === "object" ? err.error : err;
    let text = asText(detail.message || detail.code || "error");
    if (detail.code) text = `[${asText(detail.code)}] ${text}`;
    const retry = detail.retry_after ?? detail.retryAfter;
    if (typeof retry === "number") text += ` (retry in ${retry.toFixed(1)} s)`;
    if (detail.event) text = `${asText(detail.event)}: ${text}`;
    return text;
  }

  function showError(message) {
    const list = $("errors");
    const item = el("li", "error", message);
    list.append(item);
    while (list.children.length > 5) list.firstElementChild.remove();
    setTimeout(() => item.remove(), 10000);
  }

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.className = `status status-${kind}`;
  }

  function nameOf(userId) {
    return state.roomUsers.get(userId) || state.online.get(userId) || asText(userId);
  }

  // Reads the (unverified) claims of a JWT, only to show who we are.
  function jwtClaims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(
        Array.from(atob(part), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
      );
      return JSON.parse(json);
    } catch (_err) {
      return {};
    }
  }

  // Emits with an acknowledgement; resolves with the ack, or null after a timeout.
  function request(event, payload) {
    return new Promise((resolve) => {
      if (!state.socket) return resolve(null);
      state.socket.timeout(10000).emit(event, payload, (err, ack) => {
        if (err) {
          showError(`${event}: no answer from the server`);
          resolve(null);
        } else {
          resolve(ack);
        }
      });
    });
  }

  function ackFailed(event, ack) {
    if (ack && ack.ok === false) {
      showError(`${event}: ${describeError(ack.error || ack)}`);
      return true;
    }
    return !ack;
  }

  // ------------------------------------------------------------ rendering

  function renderUserList(listId, countId, users, withNotify) {
    const list = $(listId);
    list.replaceChildren();
    const entries = Array.from(users.entries()).sort((a, b) =>
      asText(a[1]).localeCompare(asText(b[1])),
    );
    for (const [userId, username] of entries) {
      const item = el("li", "user");
      item.dataset.userId = asText(userId);
      item.append(el("span", "dot"), el("span", "name", username || userId));
      if (userId === state.userId) {
        item.classList.add("self");
        item.append(el("span", "you", "(you)"));
      } else if (withNotify) {
        const wave = el("button", "wave", "wave");
        wave.type = "button";
        wave.title = "Send a notification";
        wave.addEventListener("click", () => sendWave(userId));
        item.append(wave);
      }
      list.append(item);
    }
    $(countId).textContent = String(users.size);
  }

  function renderOnline() {
    renderUserList("online-users", "online-count", state.online, true);
  }

  function renderRoomUsers() {
    renderUserList("room-users", "room-count", state.roomUsers, false);
  }

  function renderTyping() {
    const names = Array.from(state.typists.values(), (t) => t.username);
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = `${names.length} people are typing…`;
    $("typing").textContent = text;
  }

  function scrollIfNearBottom(list, wasNearBottom) {
    if (wasNearBottom) list.scrollTop = list.scrollHeight;
  }

  function insertSorted(list, item, key) {
    // Message ids are time-sortable strings: keep the list in id order.
    let before = null;
    for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
      if (!node.dataset.sortKey || node.dataset.sortKey <= key) break;
      before = node;
    }
    list.insertBefore(item, before);
  }

  function addMessage(data) {
    if (!data || data.roomId !== state.room) return;
    const key = asText(data.id);
    if (state.seen.has(key)) return;
    state.seen.add(key);
    const list = $("messages");
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
    const item = el("li", "message");
    item.dataset.messageId = key;
    item.dataset.sortKey = key;
    if (data.userId === state.userId) item.classList.add("own");
    const meta = el("div", "meta");
    meta.append(
      el("span", "author", data.username || data.userId),
      el("time", "time", formatTime(data.timestamp)),
    );
    item.append(meta, el("div", "text", data.message));
    insertSorted(list, item, key);
    scrollIfNearBottom(list, nearBottom);
  }

  function addSystemLine(text, link) {
    const list = $("messages");
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
    const item = el("li", "system", text);
    if (link) {
      item.append(" ");
      item.append(link);
    }
    list.append(item);
    scrollIfNearBottom(list, nearBottom);
  }

  function safeLink(url, text) {
    if (typeof url !== "string") return null;
    let parsed;
    try {
      parsed = new URL(url, window.location.href);
    } catch (_err) {
      return null;
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return null;
    const link = el("a", "", text);
    link.href = parsed.href;
    link.rel = "noopener noreferrer";
    link.target = "_blank";
    return link;
  }

  function addNotification(data) {
    const list = $("notifications");
    const from = data.fromUsername || nameOf(data.fromUserId);
    const item = el("li", "notification");
    item.append(
      el("span", "from", from),
      el("span", "kind", asText(data.type)),
      el("span", "content", asText(data.content)),
    );
    list.prepend(item);
    while (list.children.length > 10) list.lastElementChild.remove();
  }

  // -------------------------------------------------------------- online

  function usersFrom(payload) {
    if (Array.isArray(payload)) return payload;
    if (payload && Array.isArray(payload.users)) return payload.users;
    return [];
  }

  function setOnline(users) {
    state.online.clear();
    for (const user of users) {
      if (user && user.userId !== undefined) state.online.set(user.userId, user.username);
    }
    renderOnline();
  }

  async function refreshOnline() {
    try {
      const response = await fetch("/api/online-users", {
        headers: { Authorization: `Bearer ${state.token}` },
      });
      if (response.ok) setOnline(usersFrom(await response.json()));
    } catch (_err) {
      // The socket events keep the list current; the next refresh tries again.
    }
  }

  // ---------------------------------------------------------------- rooms

  function setRoomUsers(users) {
    state.roomUsers.clear();
    for (const user of users || []) {
      if (user && typeof user === "object") state.roomUsers.set(user.userId, user.username);
      else state.roomUsers.set(user, state.online.get(user) || asText(user));
    }
    if (state.userId) state.roomUsers.set(state.userId, state.username);
    renderRoomUsers();
  }

  function enterRoom(roomId) {
    state.room = roomId;
    state.seen.clear();
    state.typists.forEach((t) => clearTimeout(t.timer));
    state.typists.clear();
    renderTyping();
    $("messages").replaceChildren();
    $("current-room").textContent = roomId;
    $("message-input").disabled = false;
    $("message-send").disabled = false;
    $("message-input").placeholder = `Message #${roomId}`;
  }

  async function joinRoom(roomId) {
    if (!roomId || !state.socket) return;
    const previous = state.room;
    if (previous && previous !== roomId) {
      stopTyping();
      state.socket.emit("room:leave", previous);
    }
    const ack = await request("room:join", roomId);
    if (ackFailed("room:join", ack)) return;
    enterRoom(ack.roomId || roomId);
    setRoomUsers(ack.users);
    await loadHistory();
  }

  async function loadHistory() {
    const roomId = state.room;
    const ack = await request("chat:history", { roomId, limit: HISTORY_LIMIT });
    if (ackFailed("chat:history", ack) || roomId !== state.room) return;
    for (const message of ack.messages || []) addMessage(message);
    const list = $("messages");
    list.scrollTop = list.scrollHeight;
  }

  // --------------------------------------------------------------- typing

  function startTyping() {
    if (!state.room || state.isTyping) return; // the seed's is-typing guard
    state.isTyping = true;
    state.typingRoom = state.room;
    state.socket.emit("typing:start", { roomId: state.room });
  }

  function stopTyping() {
    clearTimeout(state.typingTimer);
    if (!state.isTyping) return;
    state.isTyping = false;
    if (state.socket) state.socket.emit("typing:stop", { roomId: state.typingRoom });
  }

  function onInput() {
    if ($("message-input").value === "") {
      stopTyping();
      return;
    }
    startTyping();
    clearTimeout(state.typingTimer);
    state.typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function remoteTyping(data, typing) {
    if (!data || data.roomId !== state.room || data.userId === state.userId) return;
    const known = state.typists.get(data.userId);
    if (known) clearTimeout(known.timer);
    if (typing) {
      const timer = setTimeout(() => {
        state.typists.delete(data.userId);
        renderTyping();
      }, TYPING_STALE_MS);
      state.typists.set(data.userId, { username: data.username || nameOf(data.userId), timer });
    } else {
      state.typists.delete(data.userId);
    }
    renderTyping();
  }

  // ------------------------------------------------------------- sending

  async function sendMessage(text) {
    stopTyping();
    const ack = await request("chat:message", { roomId: state.room, message: text, type: "text" });
    return !ackFailed("chat:message", ack);
  }

  async function sendWave(userId) {
    const ack = await request("notification:send", {
      targetUserId: userId,
      type: "wave",
      content: `${state.username || "someone"} waves at you`,
    });
    if (!ackFailed("notification:send", ack)) addSystemLine(`You waved at ${nameOf(userId)}.`);
  }

  async function freshDownload(event, uploadId) {
    event.preventDefault();
    const fallback = event.currentTarget.href;
    const ack = await request("file:download", { uploadId });
    const link = safeLink(ack && ack.ok ? ack.url : fallback, "");
    if (link) window.location.assign(link.href); // an attachment: the page stays
  }

  // ---------------------------------------------------------- connection

  function bindSocket(socket) {
    socket.on("connect", async () => {
      setStatus("online", "online");
      clearInterval(state.refreshTimer);
      state.refreshTimer = setInterval(refreshOnline, ONLINE_REFRESH_MS);
      await refreshOnline();
      // A new connection is in no room: rejoin the one we were in (after a reconnect).
      if (state.room) await joinRoom(state.room);
    });
    socket.on("disconnect", (reason) => {
      setStatus(socket.active ? "reconnecting…" : "offline", "offline");
      if (!socket.active && reason !== "io client disconnect") {
        showError(`Disconnected by the server (${reason})`);
      }
    });
    socket.on("connect_error", (err) => {
      if (socket.active) {
        setStatus("reconnecting…", "offline");
        return;
      }
      // The server refused the handshake (bad or expired token): log in again.
      const code = err && err.data && typeof err.data === "object" ? err.data.code : undefined;
      showError(`Connection refused: ${describeError({ code, message: err && err.message })}`);
      logout();
    });

    socket.on("users:online", (payload) => setOnline(usersFrom(payload)));
    socket.on("user:joined", (data) => {
      if (!data) return;
      state.online.set(data.userId, data.username);
      renderOnline();
    });
    socket.on("user:left", (data) => {
      if (!data) return;
      state.online.delete(data.userId);
      renderOnline();
    });

    socket.on("room:joined", (data) => {
      if (data && data.roomId === state.room) setRoomUsers(data.users);
    });
    socket.on("room:user:joined", (data) => {
      if (!data || data.roomId !== state.room) return;
      state.roomUsers.set(data.userId, data.username);
      renderRoomUsers();
    });
    socket.on("room:user:left", (data) => {
      if (!data || data.roomId !== state.room) return;
      state.roomUsers.delete(data.userId);
      renderRoomUsers();
      remoteTyping(data, false);
    });

    socket.on("chat:message", addMessage);
    socket.on("typing:start", (data) => remoteTyping(data, true));
    socket.on("typing:stop", (data) => remoteTyping(data, false));
    socket.on("notification:received", (data) => data && addNotification(data));
    socket.on("file:upload:start", (data) => {
      if (!data || data.roomId !== state.room) return;
      addSystemLine(`${nameOf(data.userId)} is uploading ${asText(data.fileName)}…`);
    });
    socket.on("file:upload:complete", (data) => {
      if (!data || data.roomId !== state.room) return;
      const name = asText(data.fileName);
      // data.url is a short-lived link signed for this user (no token in it);
      // a click asks for a fresh one, so the link keeps working later on.
      const link = safeLink(data.url, name);
      if (link) link.addEventListener("click", (event) => freshDownload(event, data.uploadId));
      addSystemLine(`${data.username || nameOf(data.userId)} shared a file:`, link || el("span", "", name));
    });
    socket.on("error", (err) => {
      showError(describeError(err));
      if (err && err.code === "token_expired") logout(); // the server ends the session
    });
  }

  function connect() {
    if (typeof window.io !== "function") {
      showError("The Socket.IO client script did not load.");
      return;
    }
    const socket = window.io({ auth: { token: state.token } });
    state.socket = socket;
    bindSocket(socket);
    setStatus("connecting…", "offline");
  }

  function showChat() {
    $("login").hidden = true;
    $("chat").hidden = false;
    $("logout").hidden = false;
    $("me").textContent = state.username ? `Signed in as ${state.username}` : "";
    $("room-id").focus();
  }

  function logout() {
    stopTyping();
    clearInterval(state.refreshTimer);
    if (state.socket) {
      const socket = state.socket;
      state.socket = null;
      socket.off();
      socket.disconnect();
    }
    sessionStorage.removeItem(TOKEN_KEY);
    Object.assign(state, { token: null, userId: null, username: null, room: null });
    state.online.clear();
    state.roomUsers.clear();
    $("messages").replaceChildren();
    $("current-room").textContent = "(none)";
    $("message-input").disabled = true;
    $("message-send").disabled = true;
    $("chat").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("me").textContent = "";
    setStatus("offline", "offline");
  }

  function start(token, userId, username) {
    const claims = jwtClaims(token);
    state.token = token;
    state.userId = userId || claims.sub || null;
    state.username = username || claims.name || state.userId;
    sessionStorage.setItem(TOKEN_KEY, token);
    showChat();
    connect();
  }

  async function login(event) {
    event.preventDefault();
    if (!DEMO) {
      const token = $("login-token").value.trim();
      if (token) start(token);
      return;
    }
    const name = $("login-name").value.trim();
    if (!name) return;
    $("login-button").disabled = true;
    try {
      const response = await fetch("/api/demo/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        showError(`Login failed: ${describeError(body.error || body.detail || body)}`);
        return;
      }
      start(body.token, body.userId, body.username);
    } catch (err) {
      showError(`Login failed: ${describeError(err && err.message)}`);
    } finally {
      $("login-button").disabled = false;
    }
  }

  // ---------------------------------------------------------------- wiring

  $("login-demo").hidden = !DEMO;
  $("login-token-box").hidden = DEMO;
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("room-form").addEventListener("submit", (event) => {
    event.preventDefault();
    joinRoom($("room-id").value.trim());
  });
  $("message-input").addEventListener("input", onInput);
  $("message-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("message-input");
    const text = input.value;
    if (!text.trim() || !state.room) return;
    input.value = "";
    if (!(await sendMessage(text))) input.value = text;
    input.focus();
  });

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) start(saved);
  else (DEMO ? $("login-name") : $("login-token")).focus();
})();
