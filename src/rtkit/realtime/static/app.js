// rtkit chat page: plain JavaScript, no build step.
// Everything received from the network is shown with textContent, never as HTML.
// Tokens live in sessionStorage and go in the Socket.IO handshake and in
// Authorization headers, never in a URL; downloads use links the server signs.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const DEMO = document.body.dataset.demo === "true";
  const CLIENT_JS_URL = document.body.dataset.clientJsUrl || "";
  const HISTORY_LIMIT = 100;
  const HISTORY_KINDS = ["message", "file", "join", "leave"];
  const TYPING_IDLE_MS = 2000; // stop typing after this long without a keystroke
  const TYPING_STALE_MS = 8000; // forget a remote typist who never sent typing:stop
  const REFRESH_MS = 15000; // the online users and the room list
  const UPLOAD_SHOWN_MS = 6000; // how long "Shared <file>" stays after an upload
  const TOKEN_KEY = "rtkit.token"; // sessionStorage: this tab only
  const ROOMS_KEY = "rtkit.rooms."; // localStorage, + user id: {rooms, room}
  const MAX_ROOMS = 100;
  // Refusals that a later attempt cannot fix: the room is forgotten.
  const FINAL_JOIN_ERRORS = new Set(["forbidden", "invalid_payload", "payload_too_large"]);

  const state = {
    socket: null,
    token: null,
    userId: null,
    username: null,
    rooms: [], // ids of the rooms joined, in join order
    room: null, // the room shown
    unread: new Map(), // room id -> messages that arrived while another room was shown
    listed: [], // GET /api/rooms: [{id, userCount}]
    loading: null, // the room whose history is on its way
    held: [], // live entries of that room, shown once its history is
    isTyping: false,
    typingRoom: null,
    typingTimer: null,
    refreshTimer: null,
    uploadTimer: null,
    online: new Map(), // userId -> username
    roomUsers: new Map(), // userId -> username
    typists: new Map(), // userId -> {username, timer}
    seen: new Set(), // entry ids shown in the current room
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

  function timeNode(value) {
    const date = toDate(value);
    const node = el("time", "time", date ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "");
    if (date) {
      node.dateTime = date.toISOString();
      node.title = date.toLocaleString();
    }
    return node;
  }

  function formatSize(bytes) {
    if (typeof bytes !== "number" || !Number.isFinite(bytes)) return "";
    const units = ["B", "KB", "MB", "GB"];
    let size = bytes;
    let unit = 0;
    while (size >= 1024 && unit < units.length - 1) {
      size /= 1024;
      unit += 1;
    }
    return `${unit ? size.toFixed(1) : size} ${units[unit]}`;
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

  // A URL the server sent, if it is on this site (download links are).
  function sameSiteUrl(url) {
    if (typeof url !== "string" || !url) return null;
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.origin === window.location.origin ? parsed.href : null;
    } catch (_err) {
      return null;
    }
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

  // ------------------------------------------------- the Socket.IO client script

  // The client script is a blocking <script> before this one: by now it ran, or failed.
  function clientMissing() {
    const elsewhere = /^([a-z][a-z0-9+.-]*:)?\/\//i.test(CLIENT_JS_URL);
    $("client-missing-what").textContent =
      `The Socket.IO client script did not load from ${CLIENT_JS_URL || "(no URL)"}, ` +
      "so this page cannot connect to the chat.";
    $("client-missing-why").textContent = elsewhere
      ? "The page loads it from another site: this computer may have no internet access, " +
        "the site may be blocked, or the file there is not the one expected (its integrity " +
        "check failed)."
      : "This server did not serve it: the rtkit installation may be incomplete, or the " +
        "--client-js-url path is wrong.";
    $("client-missing-fix").textContent = elsewhere
      ? "Start rtkit serve without --client-js-url: the page then loads the copy built " +
        "into rtkit from this server, with no internet needed. Then reload this page."
      : "Start rtkit serve without --client-js-url, or reinstall rtkit; check the server's " +
        "log, then reload this page.";
    $("client-missing").hidden = false;
    $("login-button").disabled = true;
  }

  // ------------------------------------------------------------- rooms saved

  function saveRooms() {
    if (!state.userId) return;
    try {
      const saved = JSON.stringify({ rooms: state.rooms, room: state.room });
      localStorage.setItem(ROOMS_KEY + state.userId, saved);
    } catch (_err) {
      // Storage may be full or off: the rooms are then kept for this page only.
    }
  }

  function loadRooms() {
    let saved = {};
    try {
      saved = JSON.parse(localStorage.getItem(ROOMS_KEY + state.userId) || "{}") || {};
    } catch (_err) {
      saved = {};
    }
    const rooms = Array.isArray(saved.rooms) ? saved.rooms : [];
    state.rooms = rooms.filter((r) => typeof r === "string" && r).slice(0, MAX_ROOMS);
    state.room = state.rooms.includes(saved.room) ? saved.room : state.rooms[0] || null;
  }

  function forgetRooms() {
    try {
      if (state.userId) localStorage.removeItem(ROOMS_KEY + state.userId);
    } catch (_err) {
      // nothing kept, nothing to forget
    }
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

  function renderRooms() {
    const list = $("rooms");
    list.replaceChildren();
    const counts = new Map(state.listed.map((room) => [room.id, room.userCount]));
    const ids = Array.from(new Set([...state.rooms, ...counts.keys()]));
    ids.sort((a, b) => a.localeCompare(b));
    for (const roomId of ids) {
      const item = el("li", "room");
      item.dataset.roomId = roomId;
      const button = el("button", "room-button");
      button.type = "button";
      button.append(el("span", "room-name", roomId));
      if (counts.has(roomId)) button.append(el("span", "count", counts.get(roomId)));
      const unread = state.unread.get(roomId);
      if (unread) button.append(el("span", "unread", unread));
      if (state.rooms.includes(roomId)) item.classList.add("joined");
      if (roomId === state.room) {
        item.classList.add("current");
        button.setAttribute("aria-current", "true");
      }
      button.addEventListener("click", () => {
        closeSidebar();
        openRoom(roomId);
      });
      item.append(button);
      list.append(item);
    }
  }

  function renderTyping() {
    const names = Array.from(state.typists.values(), (t) => t.username);
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = `${names.length} people are typing…`;
    $("typing").textContent = text;
  }

  function nearBottom(list) {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  }

  function insertSorted(list, item, key) {
    // Entry ids are time-sortable strings: keep the list in id order.
    let before = null;
    for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
      if (!node.dataset.sortKey || node.dataset.sortKey <= key) break;
      before = node;
    }
    list.insertBefore(item, before);
  }

  function messageNode(m) {
    const item = el("li", "message");
    if (m.userId === state.userId) item.classList.add("own");
    const meta = el("div", "meta");
    meta.append(el("span", "author", m.username || m.userId), timeNode(m.timestamp));
    item.append(meta, el("div", "text", m.message));
    return item;
  }

  function fileNode(f) {
    const item = el("li", "entry file");
    const link = el("a", "file-link", f.fileName);
    link.href = sameSiteUrl(f.url) || "#"; // live events carry a link signed for us
    link.rel = "noopener noreferrer";
    link.dataset.uploadId = asText(f.uploadId);
    link.addEventListener("click", (event) => download(event, f.uploadId, f.url));
    item.append(
      el("span", "author", f.username || nameOf(f.userId)),
      " shared ",
      link,
      el("span", "size", ` (${formatSize(f.fileSize)})`),
      " ",
      timeNode(f.timestamp),
    );
    return item;
  }

  function activityNode(a) {
    const item = el("li", `entry activity ${a.kind}`);
    const did = a.kind === "join" ? "joined" : "left";
    item.append(el("span", "author", a.username || nameOf(a.userId)), ` ${did} `);
    if (a.timestamp) item.append(timeNode(a.timestamp));
    return item;
  }

  function entryNode(entry) {
    if (entry.kind === "file") return fileNode(entry);
    if (entry.kind === "join" || entry.kind === "leave") return activityNode(entry);
    return messageNode(entry);
  }

  // Shows an entry of the current room (a message, a file, a join or leave) in id order.
  function place(entry) {
    const key = entry.id ? asText(entry.id) : null;
    if (key && state.seen.has(key)) return;
    const list = $("messages");
    const atBottom = nearBottom(list);
    const node = entryNode(entry);
    if (key) {
      state.seen.add(key);
      node.dataset.entryId = key;
      node.dataset.sortKey = key;
      insertSorted(list, node, key);
    } else {
      list.append(node); // live joins and leaves carry no id: they are the newest
    }
    if (entry.kind === "file") removeUploading(entry.uploadId);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  // A live entry of a room we are in: shown, held while the history loads, or counted.
  function arrive(entry) {
    if (!entry || typeof entry.roomId !== "string") return;
    if (entry.roomId !== state.room) {
      if (state.rooms.includes(entry.roomId) && entry.kind !== "join" && entry.kind !== "leave") {
        state.unread.set(entry.roomId, (state.unread.get(entry.roomId) || 0) + 1);
        renderRooms();
      }
      return;
    }
    if (state.loading === entry.roomId) state.held.push(entry);
    else place(entry);
  }

  function addSystemLine(text) {
    const list = $("messages");
    const atBottom = nearBottom(list);
    const item = el("li", "system", text);
    list.append(item);
    if (atBottom) list.scrollTop = list.scrollHeight;
    return item;
  }

  function removeUploading(uploadId) {
    for (const node of $("messages").querySelectorAll("li.uploading")) {
      if (node.dataset.uploadId === asText(uploadId)) node.remove();
    }
  }

  function addNotification(data) {
    const list = $("notifications");
    const item = el("li", "notification");
    // The sender's name once, then what they sent: "Alice waves at you".
    const what =
      data.type === "wave" ? asText(data.content) : `(${asText(data.type)}) ${asText(data.content)}`;
    item.append(el("span", "from", nameOf(data.fromUserId)), " ", el("span", "content", what));
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
    nameRoomUsers();
  }

  // Room members known only by id (the join ack lists ids) get their names once known.
  function nameRoomUsers() {
    let changed = false;
    for (const [userId, name] of state.roomUsers) {
      const known = state.online.get(userId);
      if (name === asText(userId) && known) {
        state.roomUsers.set(userId, known);
        changed = true;
      }
    }
    if (changed) renderRoomUsers();
  }

  async function getJson(path) {
    try {
      const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
      return response.ok ? await response.json() : null;
    } catch (_err) {
      return null; // the next refresh tries again
    }
  }

  async function refreshOnline() {
    const body = await getJson("/api/online-users?limit=200");
    if (body) setOnline(usersFrom(body));
  }

  async function refreshRooms() {
    const body = await getJson("/api/rooms?limit=100");
    if (!body || !Array.isArray(body.rooms)) return;
    state.listed = body.rooms.filter((room) => room && typeof room.id === "string");
    renderRooms();
  }

  function refreshAll() {
    refreshOnline();
    refreshRooms();
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

  function setComposer(enabled, roomId) {
    for (const id of ["message-input", "message-send", "file-button", "room-leave"]) {
      $(id).disabled = !enabled;
    }
    $("message-input").placeholder = enabled ? `Message #${roomId}` : "Join a room, then type a message";
  }

  function clearRoomView() {
    state.seen.clear();
    state.held = [];
    state.typists.forEach((t) => clearTimeout(t.timer));
    state.typists.clear();
    renderTyping();
    $("messages").replaceChildren();
  }

  function showNoRoom() {
    state.room = null;
    saveRooms();
    clearRoomView();
    state.roomUsers.clear();
    renderRoomUsers();
    $("current-room").textContent = "(none)";
    setComposer(false);
    renderRooms();
  }

  async function show(roomId, users) {
    state.room = roomId;
    state.unread.delete(roomId);
    saveRooms();
    clearRoomView();
    $("current-room").textContent = roomId;
    setComposer(true, roomId);
    setRoomUsers(users);
    renderRooms();
    await loadHistory(roomId);
  }

  // Joins roomId (again: joining a room one is in answers who is there) and shows it.
  async function openRoom(roomId) {
    if (!roomId || !state.socket) return;
    if (roomId !== state.room) stopTyping();
    const ack = await request("room:join", roomId);
    if (ackFailed("room:join", ack)) return;
    const joined = typeof ack.roomId === "string" ? ack.roomId : roomId;
    if (!state.rooms.includes(joined)) state.rooms.push(joined);
    await show(joined, ack.users);
    refreshRooms();
  }

  async function leaveRoom() {
    const roomId = state.room;
    if (!roomId || !state.socket) return;
    stopTyping();
    const ack = await request("room:leave", roomId);
    if (!ack) return;
    if (ack.ok === false && !(ack.error && ack.error.code === "not_member")) {
      showError(`room:leave: ${describeError(ack.error)}`);
      return;
    }
    state.rooms = state.rooms.filter((r) => r !== roomId);
    state.unread.delete(roomId);
    const next = state.rooms[state.rooms.length - 1];
    if (next) await openRoom(next);
    else showNoRoom();
    refreshRooms();
  }

  // A new connection is in no room: join the saved ones again, then show the current one.
  async function rejoinAll() {
    let current = null;
    for (const roomId of state.rooms.slice()) {
      const ack = await request("room:join", roomId);
      if (ack && ack.ok === false) {
        showError(`room:join ${roomId}: ${describeError(ack.error)}`);
        if (FINAL_JOIN_ERRORS.has(ack.error && ack.error.code)) {
          state.rooms = state.rooms.filter((r) => r !== roomId);
        }
      } else if (ack && roomId === state.room) {
        current = ack;
      }
    }
    saveRooms();
    if (current) await show(state.room, current.users);
    else if (state.rooms.length) await openRoom(state.rooms[state.rooms.length - 1]);
    else showNoRoom();
  }

  // Holds live entries while the history loads; a live join or leave that the history
  // already shows (the user's latest activity there is the same) is not shown twice.
  async function loadHistory(roomId) {
    state.loading = roomId;
    state.held = [];
    const ack = await request("chat:history", { roomId, limit: HISTORY_LIMIT, kinds: HISTORY_KINDS });
    if (state.room !== roomId || state.loading !== roomId) return; // another room meanwhile
    state.loading = null;
    const held = state.held;
    state.held = [];
    const entries = ackFailed("chat:history", ack) ? [] : ack.messages || [];
    const latestActivity = new Map();
    for (const entry of entries) {
      if (!entry || typeof entry !== "object") continue;
      place(entry);
      if (entry.kind === "join" || entry.kind === "leave") latestActivity.set(entry.userId, entry.kind);
    }
    for (const entry of held) {
      const activity = entry.kind === "join" || entry.kind === "leave";
      if (activity && !entry.id && latestActivity.get(entry.userId) === entry.kind) continue;
      place(entry);
    }
    const list = $("messages");
    list.scrollTop = list.scrollHeight;
  }

  // --------------------------------------------------------------- typing

  function startTyping() {
    if (!state.room || state.isTyping) return; // one typing:start per burst of keys
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
      content: "waves at you",
    });
    if (!ackFailed("notification:send", ack)) addSystemLine(`You waved at ${nameOf(userId)}.`);
  }

  // A click on a file asks for a fresh link signed for us (links expire), then follows it:
  // the file comes as an attachment, so the page stays.
  async function download(event, uploadId, fallback) {
    event.preventDefault();
    const ack = await request("file:download", { uploadId });
    if (ack && ack.ok === false) {
      showError(`file:download: ${describeError(ack.error)}`);
      return;
    }
    const url = sameSiteUrl(ack ? ack.url : fallback);
    if (url) window.location.assign(url);
  }

  // ------------------------------------------------------------- uploads

  function showUpload(name, percent, status) {
    clearTimeout(state.uploadTimer);
    $("upload").hidden = false;
    $("upload-name").textContent = name;
    $("upload-progress").value = percent;
    $("upload-status").textContent = status;
  }

  function endUpload(ok) {
    $("file-button").disabled = !state.room;
    $("file-input").value = "";
    if (!ok) $("upload-progress").value = 0;
    state.uploadTimer = setTimeout(() => {
      $("upload").hidden = true;
    }, UPLOAD_SHOWN_MS);
  }

  // PUT the bytes with the token in a header; resolves with [status, body].
  function putBytes(uploadId, file, onProgress) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", `/api/uploads/${encodeURIComponent(uploadId)}`);
      xhr.setRequestHeader("Authorization", `Bearer ${state.token}`);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", () => {
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch (_err) {
          body = null;
        }
        resolve([xhr.status, body]);
      });
      xhr.addEventListener("error", () => resolve([0, null]));
      xhr.addEventListener("abort", () => resolve([0, null]));
      xhr.send(file);
    });
  }

  // Announce (file:upload:start), PUT the bytes with a progress bar; the server then
  // tells every member (file:upload:complete), us included.
  async function shareFile(file) {
    const roomId = state.room;
    if (!file || !roomId) return;
    $("file-button").disabled = true;
    showUpload(file.name, 0, "starting…");
    const ack = await request("file:upload:start", {
      roomId,
      fileName: file.name,
      fileSize: file.size,
    });
    if (ackFailed("file:upload:start", ack)) {
      showUpload(file.name, 0, "not shared");
      endUpload(false);
      return;
    }
    const [status, body] = await putBytes(ack.uploadId, file, (done) => {
      showUpload(file.name, Math.round(done * 100), `${Math.round(done * 100)}%`);
    });
    if (status === 201) {
      showUpload(file.name, 100, `shared in #${roomId}`);
      endUpload(true);
      return;
    }
    const why = body && body.error ? describeError(body.error) : `HTTP ${status || "error"}`;
    showError(`Upload of ${file.name} failed: ${why}`);
    showUpload(file.name, 0, "failed");
    endUpload(false);
  }

  // ---------------------------------------------------------- connection

  function bindRooms(socket) {
    socket.on("room:user:joined", (data) => {
      if (!data) return;
      if (data.roomId === state.room) {
        state.roomUsers.set(data.userId, data.username);
        renderRoomUsers();
      }
      arrive({ ...data, kind: "join" });
      refreshRooms();
    });
    socket.on("room:user:left", (data) => {
      if (!data) return;
      if (data.roomId === state.room) {
        state.roomUsers.delete(data.userId);
        renderRoomUsers();
        remoteTyping(data, false);
      }
      arrive({ ...data, kind: "leave" });
      refreshRooms();
    });
    socket.on("chat:message", (data) => data && arrive({ ...data, kind: "message" }));
    socket.on("file:upload:start", (data) => {
      if (!data || data.roomId !== state.room || data.userId === state.userId) return;
      const line = addSystemLine(`${nameOf(data.userId)} is sending ${asText(data.fileName)}…`);
      line.classList.add("uploading");
      line.dataset.uploadId = asText(data.uploadId);
    });
    socket.on("file:upload:complete", (data) => data && arrive({ ...data, kind: "file" }));
    socket.on("typing:start", (data) => remoteTyping(data, true));
    socket.on("typing:stop", (data) => remoteTyping(data, false));
  }

  function bindPeople(socket) {
    socket.on("users:online", (payload) => setOnline(usersFrom(payload)));
    socket.on("user:joined", (data) => {
      if (!data) return;
      state.online.set(data.userId, data.username);
      renderOnline();
      nameRoomUsers();
    });
    socket.on("user:left", (data) => {
      if (!data) return;
      state.online.delete(data.userId);
      renderOnline();
    });
    socket.on("notification:received", (data) => data && addNotification(data));
  }

  function bindConnection(socket) {
    socket.on("connect", async () => {
      setStatus("online", "online");
      clearInterval(state.refreshTimer);
      state.refreshTimer = setInterval(refreshAll, REFRESH_MS);
      refreshAll();
      // A recovered connection kept its rooms and gets what it missed: nothing to rejoin.
      if (!socket.recovered) await rejoinAll();
    });
    socket.on("disconnect", (reason) => {
      setStatus(socket.active ? "reconnecting…" : "offline", "offline");
      if (!socket.active && reason !== "io client disconnect" && state.socket === socket) {
        showError(`Disconnected by the server (${reason})`);
      }
    });
    socket.on("connect_error", (err) => {
      if (socket.active) {
        setStatus("reconnecting…", "offline");
        return;
      }
      // The server refused the handshake (a bad or expired token): log in again.
      const code = err && err.data && typeof err.data === "object" ? err.data.code : undefined;
      const why = describeError({ code, message: err && err.message });
      showError(`Connection refused: ${why}`);
      logout(code === "token_expired" ? "Your session expired: log in again." : `Connection refused: ${why}`);
    });
    socket.on("error", (err) => {
      if (err && err.code === "token_expired") {
        // The server ends the session: say so where the login is.
        logout("Your session expired: log in again.");
        return;
      }
      showError(describeError(err));
    });
  }

  function connect() {
    const socket = window.io({ auth: { token: state.token } });
    state.socket = socket;
    bindConnection(socket);
    bindPeople(socket);
    bindRooms(socket);
    setStatus("connecting…", "offline");
  }

  function openSidebar(open) {
    document.body.classList.toggle("sidebar-open", open);
    $("sidebar-toggle").setAttribute("aria-expanded", open ? "true" : "false");
  }

  function closeSidebar() {
    openSidebar(false);
  }

  function showChat() {
    $("login").hidden = true;
    $("login-message").hidden = true;
    $("chat").hidden = false;
    $("logout").hidden = false;
    $("me").textContent = state.username ? `Signed in as ${state.username}` : "";
  }

  // Ends the session; `reason` is shown on the login card; `forget` drops the saved rooms.
  function logout(reason, forget) {
    stopTyping();
    clearInterval(state.refreshTimer);
    if (state.socket) {
      const socket = state.socket;
      state.socket = null;
      socket.off();
      socket.disconnect();
    }
    if (forget) forgetRooms();
    sessionStorage.removeItem(TOKEN_KEY);
    Object.assign(state, { token: null, userId: null, username: null, room: null, rooms: [] });
    state.online.clear();
    state.roomUsers.clear();
    state.unread.clear();
    clearRoomView();
    $("current-room").textContent = "(none)";
    setComposer(false);
    closeSidebar();
    $("chat").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("me").textContent = "";
    $("login-message").textContent = reason || "";
    $("login-message").hidden = !reason;
    setStatus("offline", "offline");
  }

  function start(token, userId, username) {
    const claims = jwtClaims(token);
    state.token = token;
    state.userId = userId || claims.sub || null;
    state.username = username || claims.name || state.userId;
    sessionStorage.setItem(TOKEN_KEY, token);
    loadRooms();
    showChat();
    renderRooms();
    if (state.room) $("current-room").textContent = state.room;
    connect();
  }

  async function login(event) {
    event.preventDefault();
    if (typeof window.io !== "function") return clientMissing();
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
  $("logout").addEventListener("click", () => logout("", true));
  $("room-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const roomId = $("room-id").value.trim();
    closeSidebar();
    openRoom(roomId);
  });
  $("room-leave").addEventListener("click", leaveRoom);
  $("sidebar-toggle").addEventListener("click", () => {
    const open = !document.body.classList.contains("sidebar-open");
    openSidebar(open);
    if (open && state.socket) refreshRooms();
  });
  $("file-button").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", () => {
    const file = $("file-input").files[0];
    if (file) shareFile(file);
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

  if (typeof window.io !== "function") {
    clientMissing();
    return;
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) start(saved);
  else (DEMO ? $("login-name") : $("login-token")).focus();
})();
