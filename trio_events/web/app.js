// trio_events web console: a small chat client of the REST API and /api/v1/events.
// Plain JavaScript, no build step. User data is only ever rendered with textContent.
"use strict";

(() => {
  const API = "/api/v1";
  const PAGE = 50;
  const MAX_BACKOFF = 15000;
  const MAX_RAW = 500;
  const $ = (id) => document.getElementById(id);

  const state = {
    me: null, // {userId, isAdmin}
    users: new Map(), // userId -> user
    rooms: new Map(), // roomId -> room
    roomId: null, // the open room
    messages: new Map(), // messageId -> top-level message of the open room
    hasOlder: false,
    thread: null, // {parent, comments: Map}
    editing: null, // {messageId, listId, box}: the open edit box, kept across renders
    permissions: null, // {roomId, flags}: GET /room-permissions of the open room
    reading: new Set(), // messageIds with a read request in flight
  };
  const conn = {
    ws: null, lastEventId: null, backoff: 1000, timer: null, failures: 0,
    helloSeen: false, stopped: true, held: false, syncing: null, queue: [], lastClose: null,
  };

  // ---------------------------------------------------------------- helpers
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node[key] = value;
    }
    node.append(...children);
    return node;
  }

  let noticeTimer = null;
  function notice(text) {
    const box = $("notice");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { box.hidden = true; }, 5000);
  }

  async function api(method, path, body) {
    const options = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, options);
    } catch (err) {
      return { status: 0, body: { errorText: "The server cannot be reached" } };
    }
    let data = {};
    try { data = await response.json(); } catch (err) { /* not JSON */ }
    if (response.status === 401 && path !== "/login" && path !== "/status") showLogin();
    return { status: response.status, body: data };
  }

  async function act(method, path, body) {
    const result = await api(method, path, body);
    if (result.status !== 200) notice(result.body.errorText || `${method} ${path} failed (${result.status})`);
    return result;
  }

  const isUnread = (m) => !(m.readTimestamps || []).some((r) => r.userId === state.me.userId);
  const userName = (id) => {
    const user = state.users.get(id);
    return user ? user.displayName || user.userName : `user ${id}`;
  };
  const time = (ms) => new Date(ms).toLocaleString();

  // ---------------------------------------------------------------- session
  function setConnection(name, detail = "") {
    const badge = $("connection-state");
    badge.dataset.state = name;
    badge.textContent = name;
    badge.title = detail;
  }

  function showLogin() {
    stopStream();
    state.me = null;
    state.roomId = null;
    state.thread = null;
    state.editing = null;
    state.rooms.clear();
    state.messages.clear();
    for (const id of ["room-list", "messages", "thread-parent", "thread-messages"]) $(id).replaceChildren();
    $("thread-view").hidden = true;
    $("composer").hidden = true;
    $("chat-view").hidden = true;
    $("logout").hidden = true;
    $("me").textContent = "";
    $("login-view").hidden = false;
    setConnection("offline");
    $("login-user").focus();
  }

  async function startSession(userId) {
    state.me = { userId, isAdmin: false };
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    $("logout").hidden = false;
    await loadUsers();
    conn.lastEventId = null;
    conn.stopped = false;
    connect();
  }

  async function loadUsers() {
    const result = await api("GET", "/users");
    if (result.status !== 200) return;
    state.users = new Map(result.body.users.map((u) => [u.userId, u]));
    const me = state.users.get(state.me.userId);
    if (me) {
      state.me.isAdmin = me.isAdmin;
      $("me").textContent = me.displayName || me.userName;
    }
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("login-error");
    error.hidden = true;
    const result = await api("POST", "/login", {
      userName: $("login-user").value, password: $("login-password").value,
    });
    if (result.status === 200) {
      $("login-password").value = "";
      await startSession(result.body.userId);
    } else {
      error.textContent = result.body.errorText || "Login failed";
      error.hidden = false;
    }
  });

  $("logout").addEventListener("click", async () => {
    stopStream();
    await api("POST", "/logout", {});
    showLogin();
  });

  // ---------------------------------------------------------------- rooms
  function roomOrder(a, b) {
    if (a.isPinned !== b.isPinned) return a.isPinned ? -1 : 1;
    const last = (r) => (r.lastMessage ? r.lastMessage.createdUtc : r.createdUtc);
    return last(b) - last(a) || a.displayName.localeCompare(b.displayName);
  }

  function renderRooms() {
    const list = $("room-list");
    list.replaceChildren(...[...state.rooms.values()].sort(roomOrder).map((room) => {
      const item = el("li", {
        "data-room-id": String(room.roomId),
        class: room.roomId === state.roomId ? "active" : "",
        title: `${room.roomType}${room.isArchived ? ", archived" : ""}`,
        onclick: () => openRoom(room.roomId),
      });
      if (room.isPinned) item.append(el("span", { class: "pin", text: "\u{1F4CC}", title: "pinned" }));
      item.append(el("span", { class: "name", text: room.displayName }));
      item.append(el("span", { class: "kind", text: room.roomType === "Private" ? "private" : "" }));
      if (room.unreadMessageCount > 0) {
        item.append(el("span", { class: "badge", text: String(room.unreadMessageCount) }));
      }
      return item;
    }));
    const open = state.rooms.get(state.roomId);
    $("room-title").textContent = open ? open.displayName : "Pick a room";
    $("composer").hidden = !open || !may("canSendMessagesInMainThread");
  }

  // What the server lets the caller do in the open room: the console offers
  // nothing it would refuse. Until the flags are in, the room's own fields stand
  // in for them (the server derives them from isArchived and isModerator).
  let permissionsAsked = 0;
  function may(flag) {
    const known = state.permissions;
    if (known && known.roomId === state.roomId) return known.flags[flag] === true;
    const room = state.rooms.get(state.roomId);
    return Boolean(room && !room.isArchived);
  }

  async function loadPermissions(roomId) {
    const asked = ++permissionsAsked;
    const result = await api("GET", `/room-permissions/${roomId}`);
    if (result.status !== 200 || asked !== permissionsAsked || state.roomId !== roomId) return;
    state.permissions = { roomId, flags: result.body.roomPermissions.permissions };
    rightsApplied();
  }

  // isArchived or isModerator of the open room changed: what may be done too.
  function rightsChanged() {
    state.permissions = null;
    rightsApplied();
    loadPermissions(state.roomId);
  }

  function rightsApplied() {
    const editing = state.editing && findMessage(state.editing.messageId);
    if (editing && !canChange(editing)) {
      state.editing = null;
      notice("You can no longer edit that message; your edit was not saved");
    }
    renderRooms();
    rerender();
  }

  async function loadRooms() {
    const result = await api("GET", "/rooms");
    if (result.status !== 200) return;
    state.rooms = new Map(result.body.rooms.map((r) => [r.roomId, r]));
    if (state.roomId !== null && !state.rooms.has(state.roomId)) closeRoom();
    renderRooms();
  }

  function closeRoom() {
    state.roomId = null;
    state.permissions = null;
    state.editing = null;
    state.messages.clear();
    state.hasOlder = false;
    closeThread();
    renderMessages();
    renderRooms();
  }

  async function openRoom(roomId) {
    if (state.roomId !== roomId) { state.editing = null; closeThread(); }
    state.roomId = roomId;
    state.permissions = null;
    state.messages.clear();
    renderRooms();
    loadPermissions(roomId);
    await loadHistory(roomId, -1, true);
    $("composer-text").focus();
  }

  async function loadHistory(roomId, cursor, toBottom) {
    const query = `cursor=${cursor}&limit=${PAGE}&direction=backward`;
    const result = await api("GET", `/rooms/${roomId}/messages?${query}`);
    if (result.status !== 200 || state.roomId !== roomId) return;
    for (const m of result.body.messages) state.messages.set(m.messageId, m);
    state.hasOlder = result.body.messages.length === PAGE;
    const list = $("messages");
    const fromBottom = list.scrollHeight - list.scrollTop;
    renderMessages();
    list.scrollTop = toBottom ? list.scrollHeight : list.scrollHeight - fromBottom;
  }

  $("load-older").addEventListener("click", () => {
    const ids = [...state.messages.keys()];
    if (state.roomId !== null && ids.length) loadHistory(state.roomId, Math.min(...ids), false);
  });

  // ---------------------------------------------------------------- messages
  const readObserver = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (entry.isIntersecting) markRead(Number(entry.target.dataset.messageId));
    }
  });

  function findMessage(id) {
    if (state.messages.has(id)) return state.messages.get(id);
    if (state.thread) {
      if (state.thread.parent.messageId === id) return state.thread.parent;
      return state.thread.comments.get(id);
    }
    return undefined;
  }

  async function markRead(id) {
    const message = findMessage(id);
    if (!message || !isUnread(message) || state.reading.has(id) || document.hidden) return;
    state.reading.add(id);
    await api("POST", `/messages/${id}/read`, {});
    state.reading.delete(id);
  }

  // The edit box is one element for as long as the edit lasts: renders move it
  // rather than rebuild it, so live events keep what was typed (see renderList).
  function startEdit(m, listId) {
    const box = el("textarea", { value: m.text, rows: 3, class: "edit-text" });
    state.editing = { messageId: m.messageId, listId, box };
    rerender();
    box.focus();
  }

  function stopEdit() { state.editing = null; rerender(); }

  function editForm(m, box) {
    const save = async () => {
      const result = await act("PATCH", `/messages/${m.messageId}`, { content: box.value });
      if (result.status === 200 && state.editing && state.editing.box === box) stopEdit();
    };
    return [box, el("div", { class: "actions" },
      el("button", { type: "button", text: "Save", class: "save", onclick: save }),
      el("button", { type: "button", text: "Cancel", class: "cancel", onclick: stopEdit }))];
  }

  // The server's rule for editing and deleting: the room writable (the flag),
  // and the caller the author or a moderator.
  function canChange(m) {
    const room = state.rooms.get(m.roomId);
    const moderates = state.me.isAdmin || Boolean(room && room.isModerator);
    const flag = m.parentMessageId === 0
      ? "canEditOrDeleteOwnMessagesInMainThread" : "canEditOrDeleteOwnMessagesInDiscussion";
    return may(flag) && (m.userId === state.me.userId || moderates);
  }

  function messageItem(m, listId) {
    const changeable = canChange(m);
    const item = el("li", {
      class: `message${isUnread(m) ? " unread" : ""}`,
      "data-message-id": String(m.messageId),
      "data-testid": "message",
    });
    const edited = m.lastEditedUtc ? el("span", { text: "(edited)" }) : "";
    item.append(el("div", { class: "meta" },
      el("span", { class: "author", text: userName(m.userId) }),
      el("time", { text: time(m.createdUtc) }), edited));
    const editing = state.editing;
    if (changeable && editing && editing.messageId === m.messageId && editing.listId === listId) {
      item.append(...editForm(m, editing.box));
      return item;
    }
    item.append(el("div", { class: "text", text: m.text }));
    const actions = el("div", { class: "actions" });
    if (m.parentMessageId === 0) {
      actions.append(el("button", {
        type: "button", class: "comments", text: `Comments (${m.commentCount})`,
        onclick: () => openThread(m),
      }));
    }
    if (changeable) {
      actions.append(el("button", {
        type: "button", class: "edit", text: "Edit",
        onclick: () => startEdit(m, listId),
      }));
      actions.append(el("button", {
        type: "button", class: "delete", text: "Delete",
        onclick: () => { if (confirm("Delete this message?")) act("DELETE", `/messages/${m.messageId}`); },
      }));
    }
    item.append(actions);
    if (isUnread(m)) readObserver.observe(item);
    return item;
  }

  function renderList(list, messages) {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const box = state.editing && state.editing.box;
    const typing = box && document.activeElement === box && list.contains(box) ? {
      start: box.selectionStart, end: box.selectionEnd,
      direction: box.selectionDirection, top: box.scrollTop,
    } : null;
    for (const item of list.children) readObserver.unobserve(item);
    list.replaceChildren(...[...messages].sort((a, b) => a.messageId - b.messageId)
      .map((m) => messageItem(m, list.id)));
    if (typing && box.isConnected) { // moving the box blurred it: give the focus back
      box.focus({ preventScroll: true });
      box.setSelectionRange(typing.start, typing.end, typing.direction);
      box.scrollTop = typing.top;
    }
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function renderMessages() {
    renderList($("messages"), state.messages.values());
    $("load-older").hidden = !state.hasOlder;
  }

  function renderThread() {
    const view = $("thread-view");
    view.hidden = !state.thread;
    if (!state.thread) return;
    renderList($("thread-parent"), [state.thread.parent]);
    renderList($("thread-messages"), state.thread.comments.values());
    $("thread-composer").hidden = !may("canSendMessagesInDiscussion");
  }

  function rerender() { renderMessages(); renderThread(); }

  function submitOnEnter(textarea, form) {
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
    });
  }

  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("composer-text").value.trim();
    if (!text || state.roomId === null) return;
    const result = await act("POST", `/rooms/${state.roomId}/messages`, { content: text });
    if (result.status === 200) $("composer-text").value = "";
  });
  submitOnEnter($("composer-text"), $("composer"));

  // ---------------------------------------------------------------- comments
  async function openThread(parent) {
    state.thread = { parent, comments: new Map() };
    renderThread();
    const query = "cursor=-1&limit=100&direction=backward";
    const result = await api("GET", `/messages/${parent.messageId}/comments?${query}`);
    if (result.status !== 200 || !state.thread || state.thread.parent.messageId !== parent.messageId) return;
    for (const c of result.body.messages) state.thread.comments.set(c.messageId, c);
    renderThread();
  }

  function closeThread() {
    if (state.editing && state.editing.listId !== "messages") state.editing = null;
    state.thread = null;
    renderThread();
  }
  $("thread-close").addEventListener("click", closeThread);

  $("thread-composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("thread-text").value.trim();
    if (!text || !state.thread) return;
    const result = await act("POST", `/messages/${state.thread.parent.messageId}/comments`, { content: text });
    if (result.status === 200) $("thread-text").value = "";
  });
  submitOnEnter($("thread-text"), $("thread-composer"));

  // ---------------------------------------------------------------- events
  function applyMessage(m, created) {
    const thread = state.thread;
    if (m.parentMessageId === 0) {
      if (m.roomId === state.roomId && (created || state.messages.has(m.messageId))) {
        state.messages.set(m.messageId, m);
      }
      if (thread && thread.parent.messageId === m.messageId) thread.parent = m;
    } else if (thread && thread.parent.messageId === m.parentMessageId) {
      if (created || thread.comments.has(m.messageId)) thread.comments.set(m.messageId, m);
    }
    if (!state.users.has(m.userId)) loadUsers().then(rerender);
  }

  function applyEvent(frame) {
    const data = frame.data || {};
    switch (frame.type) {
      case "TextMessagesCreated":
      case "TextMessagesUpdated":
        for (const m of data.messages) applyMessage(m, frame.type === "TextMessagesCreated");
        rerender();
        break;
      case "TextMessageDeleted":
        if (state.editing && state.editing.messageId === data.messageId) {
          state.editing = null;
          notice("The message you were editing was deleted");
        }
        if (data.parentMessageId === 0) {
          state.messages.delete(data.messageId);
          if (state.thread && state.thread.parent.messageId === data.messageId) closeThread();
        } else if (state.thread) {
          state.thread.comments.delete(data.messageId);
        }
        rerender();
        break;
      case "RoomCreated":
      case "RoomUpdated": {
        const before = state.rooms.get(data.room.roomId);
        state.rooms.set(data.room.roomId, data.room);
        renderRooms();
        const changed = !before || before.isArchived !== data.room.isArchived
          || before.isModerator !== data.room.isModerator;
        if (data.room.roomId === state.roomId && changed) rightsChanged();
        break;
      }
      case "RoomDeleted":
        state.rooms.delete(data.roomId);
        if (data.roomId === state.roomId) { closeRoom(); notice("The room is no longer available"); }
        renderRooms();
        break;
      case "ResyncRequired":
        resync();
        break;
      default: // Hello, Pong and future types change nothing here
        break;
    }
  }

  // Refetch everything over REST; frames that arrive meanwhile wait and apply after.
  function resync() {
    if (conn.syncing) return conn.syncing;
    conn.syncing = (async () => {
      try {
        await loadUsers();
        await loadRooms();
        if (state.roomId !== null) {
          loadPermissions(state.roomId);
          state.messages.clear();
          await loadHistory(state.roomId, -1, true);
        }
        if (state.thread) await openThread(state.thread.parent);
      } finally {
        conn.syncing = null;
        const queued = conn.queue.splice(0);
        for (const frame of queued) applyEvent(frame);
      }
    })();
    return conn.syncing;
  }

  function logRaw(text) {
    const list = $("raw-events");
    list.append(el("li", { text }));
    while (list.childElementCount > MAX_RAW) list.firstElementChild.remove();
    const panel = $("raw-panel");
    if (!panel.hidden) panel.scrollTop = panel.scrollHeight;
  }

  function onFrame(text) {
    logRaw(text);
    let frame;
    try { frame = JSON.parse(text); } catch (err) { return; }
    if (frame.type === "Hello") {
      conn.helloSeen = true;
      conn.failures = 0;
      conn.backoff = 1000;
      setConnection("live");
      const resumed = frame.data && frame.data.resumed;
      if (!resumed) { // a fresh stream: REST covers everything up to the Hello's eventId
        if (frame.data && typeof frame.data.eventId === "number") conn.lastEventId = frame.data.eventId;
        resync();
      }
    } else if (conn.syncing && frame.type !== "ResyncRequired") {
      conn.queue.push(frame);
    } else {
      applyEvent(frame);
    }
    if (typeof frame.eventId === "number") conn.lastEventId = frame.eventId;
  }

  function connect() {
    clearTimeout(conn.timer);
    if (conn.stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const since = conn.lastEventId !== null ? `?since=${conn.lastEventId}` : "";
    setConnection(conn.lastEventId === null ? "connecting" : "reconnecting");
    conn.helloSeen = false;
    const ws = new WebSocket(`${scheme}//${location.host}${API}/events${since}`);
    conn.ws = ws;
    ws.onmessage = (event) => { if (conn.ws === ws) onFrame(event.data); };
    ws.onclose = (event) => {
      if (conn.ws !== ws) return;
      if (conn.helloSeen) conn.lastClose = event.code;
      onDrop(event.code);
    };
  }

  async function onDrop(code) {
    conn.ws = null;
    if (conn.stopped) return;
    setConnection("reconnecting");
    if (code === 4001) { showLogin(); return; } // the session ended
    if (!conn.helloSeen) {
      conn.failures += 1;
      await checkRefusal();
      if (conn.stopped || conn.ws) return; // logged out, or reconnected meanwhile
    }
    if (conn.held) return;
    const delay = conn.backoff;
    conn.backoff = Math.min(conn.backoff * 2, MAX_BACKOFF);
    const failed = conn.failures ? `, ${conn.failures} failed` : "";
    setConnection(conn.lastEventId === null ? "connecting" : "reconnecting",
      `next attempt in ${delay / 1000} s${failed}`);
    conn.timer = setTimeout(connect, delay);
  }

  // A failed handshake looks the same whether the server is down, restarting or
  // refusing `since`. Only a 400 to the same `since` over plain HTTP (the
  // catch-up request) means it will never resume from there (say, its data was
  // restored from an older backup): then the next stream starts afresh and its
  // Hello (resumed: false) reloads everything over REST. Anything else keeps
  // `since`, however long the outage, so the stream resumes when it is back.
  async function checkRefusal() {
    const since = conn.lastEventId;
    const probe = since === null ? "/status" : `/events?since=${since}&limit=1`;
    const result = await api("GET", probe);
    if (result.status === 401) showLogin();
    else if (result.status === 400 && since !== null && conn.lastEventId === since) {
      conn.lastEventId = null;
    }
  }

  function stopStream() {
    conn.stopped = true;
    clearTimeout(conn.timer);
    if (conn.ws) { const ws = conn.ws; conn.ws = null; ws.close(1000); }
  }

  $("raw-toggle").addEventListener("click", () => {
    const panel = $("raw-panel");
    panel.hidden = !panel.hidden;
    $("raw-toggle").setAttribute("aria-pressed", String(!panel.hidden));
  });
  $("raw-clear").addEventListener("click", () => $("raw-events").replaceChildren());
  // Messages that came into view while the tab was hidden were not marked read
  // then, and the observer reports a message only when its visibility changes:
  // observing them afresh makes it report which of them are on screen now.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    for (const item of document.querySelectorAll(".message.unread")) {
      readObserver.unobserve(item);
      readObserver.observe(item);
    }
  });

  // A small hook for tests and for trying resume by hand from the devtools console.
  window.__teConsole = {
    dropConnection({ hold = false } = {}) {
      conn.held = hold;
      if (conn.ws) conn.ws.close(1000);
    },
    hold() { conn.held = true; }, // after the next drop, wait for reconnect()
    reconnect() {
      conn.held = false;
      if (!conn.ws && !conn.stopped) connect();
    },
    get lastEventId() { return conn.lastEventId; },
    get failures() { return conn.failures; }, // handshakes without a Hello since the last one
    get lastClose() { return conn.lastClose; }, // how the last live stream ended
  };

  // ---------------------------------------------------------------- start
  (async () => {
    const result = await api("GET", "/status");
    if (result.status === 200) await startSession(result.body.userId);
    else showLogin();
  })();
})();
