/* Agent dashboard: the queue, claimed conversations and the live socket to /ws/agent.
 *
 * Plain ES2020, no framework. Every piece of user-provided text goes into the page through
 * textContent (never innerHTML), so a customer's name or message cannot inject markup.
 */
(() => {
  "use strict";

  const app = document.getElementById("app");
  if (!app) return;

  const ME = {
    id: app.dataset.staffId || "",
    name: app.dataset.staffName || "",
    // What customers see of me: the author of my messages in every frame.
    displayName: app.dataset.staffDisplayName || "",
    role: app.dataset.staffRole || "",
  };
  const BASE_TITLE = "Agent dashboard";
  const MAX_BODY = 4000;
  const TYPING_REPEAT_MS = 2000; // send "typing: true" at most this often
  const TYPING_IDLE_MS = 3000; // send "typing: false" after this long without input
  const VISITOR_TYPING_TIMEOUT_MS = 8000; // hide a stale visitor typing indicator
  const WAIT_REFRESH_MS = 15000;
  const CLAIM_TIMEOUT_MS = 10000;
  const PING_EVERY_MS = 25000;
  const PONG_TIMEOUT_MS = 10000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    conn: $("conn"),
    connText: $("conn-text"),
    connRetry: $("conn-retry"),
    sound: $("sound-toggle"),
    lists: { queue: $("list-queue"), mine: $("list-mine"), others: $("list-others") },
    counts: { queue: $("count-queue"), mine: $("count-mine"), others: $("count-others") },
    empties: { queue: $("empty-queue"), mine: $("empty-mine"), others: $("empty-others") },
    paneEmpty: $("pane-empty"),
    preview: $("pane-preview"),
    conv: $("pane-conv"),
    convAvatar: $("conv-avatar"),
    convName: $("conv-name"),
    convEmail: $("conv-email"),
    convCompany: $("conv-company"),
    convConsent: $("conv-consent"),
    convStatus: $("conv-status"),
    convPresence: $("conv-presence"),
    convClose: $("conv-close"),
    convDismiss: $("conv-dismiss"),
    scroller: $("conv-scroller"),
    typing: $("conv-typing"),
    composer: $("composer"),
    input: $("composer-input"),
    send: $("composer-send"),
    noteButton: $("composer-note"),
    closedNote: $("conv-closed-note"),
    toasts: $("toasts"),
    // handover, live status and noticing work (see the section "handover" below)
    announcer: $("announcer"),
    away: $("away-toggle"),
    notify: $("notify-toggle"),
    profileOpen: $("profile-open"),
    profileName: $("profile-name"),
    profileDialog: $("profile-dialog"),
    profileForm: $("profile-form"),
    profileInput: $("profile-input"),
    profileError: $("profile-error"),
    profileCancel: $("profile-cancel"),
    transferButton: $("conv-transfer"),
    transferForm: $("transfer-form"),
    transferTo: $("transfer-to"),
    transferCancel: $("transfer-cancel"),
    pausedNote: $("conv-paused-note"),
  };

  /* ------------------------------------------------------------------ helpers */

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function newId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    // randomUUID needs a secure context; getRandomValues does not.
    const b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /** Accepts ISO strings or epoch seconds/milliseconds; returns a Date or null. */
  function toDate(value) {
    if (value === null || value === undefined || value === "") return null;
    let d;
    if (typeof value === "number") d = new Date(value < 1e12 ? value * 1000 : value);
    else d = new Date(value);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  // The widget shows times in this same format (static/widget-app.js), so an agent and a
  // customer who talk about "the message at 14:05" see the same text.
  function clock(value) {
    const d = toDate(value);
    if (!d) return "";
    const sameDay = d.toDateString() === new Date().toDateString();
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (sameDay) return time;
    return `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
  }

  function duration(ms) {
    const min = Math.floor(Math.max(0, ms) / 60000);
    if (min < 1) return "<1 min";
    if (min < 60) return `${min} min`;
    const h = Math.floor(min / 60);
    const m = min % 60;
    if (h < 24) return m ? `${h} h ${m} min` : `${h} h`;
    const days = Math.floor(h / 24);
    return days === 1 ? "1 day" : `${days} days`;
  }

  function waitingText(since) {
    const d = toDate(since);
    return d ? `waiting ${duration(Date.now() - d.getTime())}` : "waiting";
  }

  function waitDuration(since) {
    const d = toDate(since);
    return d ? duration(Date.now() - d.getTime()) : "unknown";
  }

  function initials(name) {
    const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
    const letters = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || "?").slice(0, 2);
    return letters.toUpperCase();
  }

  function avatarClass(key) {
    let h = 0;
    for (const ch of String(key || "")) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return `av-${h % 8}`;
  }

  function setAvatar(node, name, key) {
    node.textContent = initials(name);
    node.className = `avatar ${avatarClass(key || name)}`;
  }

  function customerOf(item) {
    const c = (item && item.customer) || {};
    return { name: c.name || "Unknown visitor", email: c.email || "", company: c.company || "" };
  }

  /* ------------------------------------------------------------------ toasts */

  function toast(text, kind = "error") {
    const node = el("div", `toast toast-${kind}`, text);
    ui.toasts.appendChild(node);
    setTimeout(() => node.classList.add("toast-out"), 4200);
    setTimeout(() => node.remove(), 4600);
  }

  const ERROR_TEXT = {
    already_claimed: "Another agent took this one.",
    conversation_closed: "This conversation is already closed.",
    rate_limited: "You are sending too fast. Please wait a moment.",
    body_too_long: "That message is too long (4,000 characters at most).",
    not_found: "That conversation no longer exists.",
    not_claimed: "You have not claimed this conversation.",
    forbidden: "You are not allowed to do that.",
    consent_withdrawn: "The customer withdrew their consent: nothing can be sent until they consent again.",
    unknown_agent: "There is no staff member by that name.",
    agent_disabled: "That account is disabled.",
    agent_away: "That agent is away and takes no conversations now.",
    transfer_to_self: "This conversation is yours already.",
    already_assigned: "That agent has this conversation already.",
    already_queued: "This conversation is already waiting in the queue.",
    not_yours: "Only the agent handling it (or an admin) can hand it over.",
    agent_present: "Its agent is at their dashboard: ask them to transfer it to you.",
  };

  /* ------------------------------------------------------------------ sound */

  let audioCtx = null;
  let soundOn = true;
  let lastBeep = 0;
  try {
    soundOn = window.localStorage.getItem("dashboard.sound") !== "off";
  } catch (_) {
    /* storage may be blocked */
  }

  function renderSoundButton() {
    ui.sound.textContent = soundOn ? "Sound on" : "Sound off";
    ui.sound.setAttribute("aria-pressed", soundOn ? "true" : "false");
    ui.sound.classList.toggle("is-off", !soundOn);
  }

  function ensureAudio() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    if (!audioCtx) {
      try {
        audioCtx = new Ctx();
      } catch (_) {
        return null;
      }
    }
    if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {});
    return audioCtx;
  }

  /** A short two-tone chime made with an OscillatorNode; no audio file. */
  function beep() {
    if (!soundOn) return;
    const now = Date.now();
    if (now - lastBeep < 800) return;
    lastBeep = now;
    const ctx = ensureAudio();
    if (!ctx) return;
    try {
      const t = ctx.currentTime;
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.setValueAtTime(880, t);
      osc.frequency.setValueAtTime(1175, t + 0.12);
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.18, t + 0.015);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.32);
      osc.connect(gain);
      gain.connect(ctx.destination);
      osc.start(t);
      osc.stop(t + 0.35);
    } catch (_) {
      /* audio is a nicety */
    }
  }

  // Browsers only let audio start after a user gesture: unlock on the first one.
  const unlock = () => {
    ensureAudio();
    window.removeEventListener("pointerdown", unlock);
    window.removeEventListener("keydown", unlock);
  };
  window.addEventListener("pointerdown", unlock);
  window.addEventListener("keydown", unlock);

  ui.sound.addEventListener("click", () => {
    soundOn = !soundOn;
    try {
      window.localStorage.setItem("dashboard.sound", soundOn ? "on" : "off");
    } catch (_) {
      /* ignore */
    }
    renderSoundButton();
    if (soundOn) {
      lastBeep = 0;
      beep();
    }
  });
  renderSoundButton();

  /* ------------------------------------------------------------------ state */

  /** Latest queue items by conversation id, in server order. */
  let queueItems = new Map();
  /** Ids seen in any queue frame so far; null until the first frame arrives. */
  let knownIds = null;
  /** Conversations open in this dashboard (claimed by me, or closed but not yet dismissed). */
  const convs = new Map();
  /** Claims sent and not yet answered: id -> timer. */
  const pendingClaims = new Map();
  /** What the main pane shows: null, {kind: "preview", id} or {kind: "conv", id}. */
  let selected = null;
  /** History of the queued conversation being previewed (agents may read queued ones). */
  let peek = { id: null, messages: new Map(), lastSeq: 0, asked: -1 };
  /** Queued conversation id -> the last seq I saw in its preview (for "New" in the queue). */
  const queueSeen = new Map();

  function isMine(item) {
    if (!item || item.status !== "active") return false;
    if (item.agent_id !== undefined && item.agent_id !== null) return String(item.agent_id) === ME.id;
    return item.agent === ME.name;
  }

  function makeConv(id, item) {
    const wrap = el("div", "msg-wrap");
    const list = el("ol", "msg-list");
    const pend = el("ol", "msg-list msg-pending-list");
    wrap.append(list, pend);
    return {
      id,
      item: item || { conversation_id: id },
      status: (item && item.status) || "active",
      messages: new Map(), // seq -> frame
      nodes: new Map(), // seq -> <li>
      lastSeq: 0,
      historyUpTo: (item && Number(item.last_seq)) || 0, // replayed history is not "unread"
      pending: new Map(), // client_msg_id -> {body, node}
      wrap,
      list,
      pend,
      unread: 0,
      seenSeq: 0, // the visitor's read mark: "Seen" goes under my last message up to it
      emailedSeq: 0, // replies up to it went by email: "Emailed" under the last one not seen
      visitorOnline: null, // whether the customer has the chat open (null: not heard yet)
      readSent: 0, // the last visitor message I told the server I saw
      lastVisitorSeq: 0,
      visitorTyping: false,
      visitorTypingTimer: null,
      typingOn: false,
      typingSentAt: 0,
      typingIdle: null,
      draft: "",
      scrollTop: null,
      closing: false,
    };
  }

  function openConv(id, opts = {}) {
    let conv = convs.get(id);
    if (!conv) {
      conv = makeConv(id, queueItems.get(id));
      convs.set(id, conv);
      send({ type: "resume", conversation_id: id, after_seq: 0 });
    }
    if (opts.select) select("conv", id);
    else renderSidebar();
    return conv;
  }

  /* ------------------------------------------------------------------ socket */

  let ws = null;
  let attempt = 0;
  let openedAt = 0;
  let reconnectTimer = null;
  let reconnectAt = 0;
  let countdownTimer = null;
  let pingTimer = null;
  let pongTimer = null;

  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch (_) {
      return false;
    }
  }

  function setConn(state, text) {
    ui.conn.className = `conn conn-${state}`;
    ui.connText.textContent = text;
    ui.connRetry.hidden = state !== "reconnecting" && state !== "offline";
    app.classList.toggle("is-offline", state !== "online");
    refreshPendingLabels();
  }

  function connect() {
    clearTimeout(reconnectTimer);
    clearInterval(countdownTimer);
    reconnectTimer = null;
    if (ws) return;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    let sock;
    try {
      sock = new WebSocket(`${scheme}//${window.location.host}/ws/agent`);
    } catch (_) {
      scheduleReconnect(0, false);
      return;
    }
    ws = sock;
    let opened = false;
    setConn("connecting", "Connecting…");

    sock.addEventListener("open", () => {
      if (ws !== sock) return;
      opened = true;
      openedAt = Date.now();
      setConn("online", "Connected");
      // Catch up on every open conversation, then resend anything never acknowledged
      // (same client_msg_id, so the server stores it once).
      for (const conv of convs.values()) {
        if (conv.status === "closed" && conv.messages.size) continue;
        send({ type: "resume", conversation_id: conv.id, after_seq: conv.lastSeq });
        for (const [cid, p] of conv.pending) {
          send({ type: "message", conversation_id: conv.id, body: p.body, client_msg_id: cid });
        }
      }
      peek.asked = -1; // re-read a previewed queue item's history on the next render
      startHeartbeat();
    });

    sock.addEventListener("message", (ev) => {
      if (ws !== sock) return;
      clearTimeout(pongTimer);
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      if (frame && typeof frame === "object") handleFrame(frame);
    });

    sock.addEventListener("close", (ev) => {
      if (ws !== sock) return;
      ws = null;
      stopHeartbeat();
      for (const conv of convs.values()) conv.typingOn = false;
      if (ev.code === 4401) {
        // Signed out (logout elsewhere, session ended): the page shows the login form.
        window.location.reload();
        return;
      }
      if (!opened) {
        // A refused handshake (e.g. HTTP 403) has no useful close code: ask who we are.
        fetch("/api/staff/me", { credentials: "same-origin", cache: "no-store" })
          .then((r) => {
            if (r.status === 401) window.location.reload();
          })
          .catch(() => {});
      }
      scheduleReconnect(ev.code, opened);
    });
  }

  function scheduleReconnect(code, wasOpen) {
    if (wasOpen && Date.now() - openedAt > 15000) attempt = 0; // it had been stable
    const cap = code === 4429 ? 60000 : 30000;
    const base = Math.min(cap, 1000 * 2 ** Math.min(attempt, 10));
    const delay = Math.round(base / 2 + Math.random() * (base / 2)); // jittered
    attempt += 1;
    reconnectAt = Date.now() + delay;
    reconnectTimer = setTimeout(connect, delay);
    const label = code === 1008 ? "Connection refused" : code === 4429 ? "Rate limited" : "Disconnected";
    const tick = () => {
      const s = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
      setConn("reconnecting", `${label} · retrying in ${s}s`);
    };
    tick();
    clearInterval(countdownTimer);
    countdownTimer = setInterval(tick, 1000);
  }

  function reconnectNow() {
    if (ws) return;
    attempt = 0;
    connect();
  }

  function startHeartbeat() {
    stopHeartbeat();
    pingTimer = setInterval(() => {
      if (!send({ type: "ping" })) return;
      clearTimeout(pongTimer);
      pongTimer = setTimeout(() => {
        // No answer: the connection is dead even if the browser has not noticed yet.
        if (ws) ws.close(4000, "heartbeat timeout");
      }, PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  function stopHeartbeat() {
    clearInterval(pingTimer);
    clearTimeout(pongTimer);
  }

  ui.connRetry.addEventListener("click", reconnectNow);
  window.addEventListener("online", reconnectNow);

  /* ------------------------------------------------------------------ frames */

  function handleFrame(f) {
    switch (f.type) {
      case "queue":
        onQueue(Array.isArray(f.conversations) ? f.conversations : [], f);
        break;
      case "message":
        if (f.sender === "note") onNote(f);
        else onMessage(f);
        break;
      case "ack":
        if (f.note_id !== undefined) onNoteAck(f);
        else onAck(f);
        break;
      case "rating":
        onRating(f);
        break;
      case "typing":
        onTyping(f);
        break;
      case "status":
        onStatus(f);
        break;
      case "read":
        onRead(f);
        break;
      case "mailed":
        onMailed(f);
        break;
      case "presence":
        onVisitorPresence(f);
        break;
      case "error":
        onError(f);
        break;
      case "erased":
        onErased(f);
        break;
      default:
        break; // pong and anything newer
    }
  }

  /** Counts of the latest queue frame; with thousands open, the frame lists only a page. */
  let queueCounts = { queued: null, omitted: 0 };

  function onQueue(list, f) {
    queueCounts = {
      queued: Number.isFinite(f.queued) ? f.queued : null,
      omitted: Number.isFinite(f.omitted) ? f.omitted : 0,
    };
    const next = new Map();
    for (const item of list) {
      if (item && item.conversation_id) next.set(String(item.conversation_id), item);
    }
    let arrivals = 0;
    if (knownIds === null) {
      knownIds = new Set(next.keys());
    } else {
      for (const [id, item] of next) {
        if (!knownIds.has(id) && item.status === "queued") arrivals += 1;
        knownIds.add(id);
      }
    }
    queueItems = next;

    for (const [id, item] of next) {
      const conv = convs.get(id);
      if (conv) {
        conv.item = item;
        conv.paused = Boolean(item.paused);
        if (conv.status !== "closed") conv.status = statusFor(item);
      } else if (isMine(item)) {
        // Claimed by me (in another tab, or before a reload): open it, without stealing focus.
        openConv(id, { select: false });
      }
    }
    for (const conv of convs.values()) {
      // An open conversation that left the queue has been closed. A cut frame always lists
      // my own, but another's may just not fit the page: its status frames tell.
      if (!next.has(conv.id) && conv.status !== "closed" &&
          (!queueCounts.omitted || (conv.item && isMine(conv.item)))) markClosed(conv);
    }
    if (arrivals) {
      beep();
      noticeWork(arrivals === 1 ? "A new conversation is waiting." : `${arrivals} new conversations are waiting.`);
    }
    renderSidebar();
    renderPane();
  }

  function onMessage(f) {
    const id = String(f.conversation_id || "");
    const seq = Number(f.seq);
    if (!id || !Number.isFinite(seq)) return;
    let conv = convs.get(id);
    if (!conv) {
      if (peek.id === id) {
        addPeekMessage(f);
        return;
      }
      // Live messages only come for conversations this agent holds.
      conv = openConv(id, { select: false });
    }
    addMessage(conv, f);
  }

  function addPeekMessage(f) {
    const seq = Number(f.seq);
    if (peek.messages.has(seq)) return;
    peek.messages.set(seq, f);
    peek.lastSeq = Math.max(peek.lastSeq, seq);
    const list = document.getElementById("peek-list");
    if (!list) return;
    const node = renderMessage(f);
    const same = list.querySelector(`li[data-seq="${seq}"]`);
    if (same) {
      same.replaceWith(node); // the queue's short copy of the last message
      return;
    }
    let before = null;
    for (const child of list.children) {
      if (Number(child.dataset.seq) > seq) {
        before = child;
        break;
      }
    }
    list.insertBefore(node, before);
    const empty = document.getElementById("peek-empty");
    if (empty) empty.hidden = true;
    const box = list.parentNode;
    box.scrollTop = box.scrollHeight;
  }

  /** Load (or top up) the history of the queued conversation shown in the preview. */
  function peekAt(id) {
    const item = queueItems.get(id);
    if (!item || item.status !== "queued") return;
    if (peek.id !== id) peek = { id, messages: new Map(), lastSeq: 0, asked: -1 };
    const last = Number(item.last_seq) || 0;
    if ((last > peek.asked && last > peek.lastSeq) || peek.asked < 0) {
      if (send({ type: "resume", conversation_id: id, after_seq: peek.lastSeq })) peek.asked = last;
    }
  }

  function addMessage(conv, f) {
    const seq = Number(f.seq);
    if (f.client_msg_id && conv.pending.has(f.client_msg_id) && f.sender === "agent") {
      const p = conv.pending.get(f.client_msg_id);
      conv.pending.delete(f.client_msg_id);
      p.node.remove();
    }
    if (conv.messages.has(seq)) {
      conv.messages.set(seq, Object.assign({}, conv.messages.get(seq), f));
      const old = conv.nodes.get(seq);
      const fresh = renderMessage(conv.messages.get(seq));
      old.replaceWith(fresh);
      conv.nodes.set(seq, fresh);
      renderSeen(conv);
      return;
    }
    const nearBottom = isViewing(conv) && isNearBottom();
    conv.messages.set(seq, f);
    const node = renderMessage(f);
    conv.nodes.set(seq, node);
    // Keep the list ordered by seq; frames usually arrive in order, so try the end first.
    const last = conv.list.lastElementChild;
    if (!last || Number(last.dataset.seq) < seq) conv.list.appendChild(node);
    else insertBySeq(conv, node, seq);
    conv.lastSeq = Math.max(conv.lastSeq, seq);

    if (f.sender === "visitor") {
      conv.lastVisitorSeq = Math.max(conv.lastVisitorSeq, seq);
      setVisitorTyping(conv, false);
      if (seq > conv.historyUpTo && (!isViewing(conv) || document.hidden)) {
        conv.unread += 1;
        beep();
        noticeWork(`New message from ${customerOf(conv.item).name}.`, "A customer wrote to you.");
        updateTitle();
      }
    }
    if (isViewing(conv)) {
      if (nearBottom || f.sender === "agent") scrollToBottom();
    }
    renderSeen(conv);
    markRead(conv);
    renderSidebar();
  }

  /* ------------------------------------------------------------------ read marks */
  // The visitor's `read` frames put "Seen" under my last message they saw; mine tell the
  // visitor which of their messages I saw: the open conversation, while the tab is visible.
  function onRead(f) {
    const conv = convs.get(String(f.conversation_id || ""));
    if (!conv || f.sender !== "visitor" || !Number.isFinite(Number(f.seq))) return;
    conv.seenSeq = Math.max(conv.seenSeq, Number(f.seq));
    renderSeen(conv);
  }

  // Whether the customer has the chat open: someone who left gets the answer by email (when
  // the server sends mail), so it is worth writing it whole.
  function onVisitorPresence(f) {
    const conv = convs.get(String(f.conversation_id || ""));
    if (!conv || typeof f.visitor_online !== "boolean") return;
    conv.visitorOnline = f.visitor_online;
    if (isViewing(conv)) renderPresence(conv);
    renderSidebar();
  }

  function renderPresence(conv) {
    const node = ui.convPresence;
    node.hidden = conv.visitorOnline === null || conv.status === "closed";
    if (node.hidden) return;
    const mail = document.getElementById("app").dataset.mail === "on";
    node.classList.toggle("is-here", conv.visitorOnline);
    node.textContent = conv.visitorOnline ? "Online now"
      : mail ? "Offline: replies they do not see are emailed to them" : "Offline";
  }

  // Replies the customer did not see in time are emailed to them (the server's mail job):
  // "Emailed" goes under the last of them, until the customer sees it here.
  function onMailed(f) {
    const conv = convs.get(String(f.conversation_id || ""));
    if (!conv || !Number.isFinite(Number(f.seq))) return;
    conv.emailedSeq = Math.max(conv.emailedSeq, Number(f.seq));
    renderSeen(conv);
  }

  function renderSeen(conv) {
    const lastReply = (upTo) => {
      let found = 0;
      for (const [seq, m] of conv.messages) if (m.sender === "agent" && seq <= upTo && seq > found) found = seq;
      return found;
    };
    const seen = lastReply(conv.seenSeq);
    const emailed = lastReply(conv.emailedSeq);
    placeMark(conv, "msg-seen", "Seen", seen);
    placeMark(conv, "msg-emailed", "Emailed to the customer", emailed > seen ? emailed : 0);
  }

  function placeMark(conv, cls, text, seq) {
    const shown = conv.list.querySelector("." + cls);
    if (shown && shown.parentNode === conv.nodes.get(seq)) return;
    if (shown) shown.remove();
    if (seq) conv.nodes.get(seq).appendChild(el("div", cls, text));
  }

  function markRead(conv) {
    if (!isViewing(conv) || document.hidden || conv.lastVisitorSeq <= conv.readSent) return;
    if (send({ type: "read", conversation_id: conv.id, seq: conv.lastVisitorSeq })) conv.readSent = conv.lastVisitorSeq;
  }

  function insertBySeq(conv, node, seq) {
    for (const child of conv.list.children) {
      if (Number(child.dataset.seq) > seq) {
        conv.list.insertBefore(node, child);
        return;
      }
    }
    conv.list.appendChild(node);
  }

  function onAck(f) {
    const cid = f.client_msg_id;
    let conv = f.conversation_id ? convs.get(String(f.conversation_id)) : null;
    if (!conv) {
      for (const c of convs.values()) {
        if (c.pending.has(cid)) {
          conv = c;
          break;
        }
      }
    }
    if (!conv || !conv.pending.has(cid)) return;
    const p = conv.pending.get(cid);
    const seq = Number(f.seq);
    if (!conv.messages.has(seq)) {
      // The ack can beat the broadcast copy; show the stored message now, dedupe by seq later.
      addMessage(conv, {
        type: "message",
        conversation_id: conv.id,
        seq,
        sender: "agent",
        author: ME.displayName,
        body: p.body,
        sent_at: new Date().toISOString(),
        client_msg_id: cid,
      });
    }
    if (conv.pending.has(cid)) {
      conv.pending.delete(cid);
      p.node.remove();
    }
  }

  function onTyping(f) {
    const conv = convs.get(String(f.conversation_id || ""));
    if (!conv || f.sender === "agent") return;
    setVisitorTyping(conv, Boolean(f.state));
  }

  function setVisitorTyping(conv, on) {
    clearTimeout(conv.visitorTypingTimer);
    const changed = conv.visitorTyping !== on;
    conv.visitorTyping = on;
    if (on) {
      conv.visitorTypingTimer = setTimeout(() => setVisitorTyping(conv, false), VISITOR_TYPING_TIMEOUT_MS);
    }
    if (!changed) return;
    if (isViewing(conv)) renderTyping(conv);
    renderSidebar();
  }

  function onStatus(f) {
    const id = String(f.conversation_id || "");
    if (!id) return;
    if (onHandoverStatus(f)) {
      renderSidebar();
      renderPane();
      return;
    }
    const item = queueItems.get(id);
    // `agent` is the display name customers see (several agents may share one); staff are told
    // apart by agent_id, and agent_name is the sign-in name staff know each other by.
    const mine = f.agent_id !== undefined && f.agent_id !== null && String(f.agent_id) === ME.id;
    if (item) {
      item.status = f.status;
      if (f.agent_name !== undefined) item.agent = f.agent_name;
      if (f.agent_id !== undefined) item.agent_id = f.agent_id;
    }
    if (f.status === "active") {
      const claimedByMe = pendingClaims.has(id);
      if (claimedByMe || mine || convs.has(id)) {
        clearTimeout(pendingClaims.get(id));
        pendingClaims.delete(id);
        const conv = openConv(id, { select: false });
        if (conv.status !== "closed") conv.status = "active";
        const previewing = selected && selected.kind === "preview" && selected.id === id;
        if (claimedByMe || previewing) select("conv", id);
      }
    } else if (f.status === "closed") {
      clearTimeout(pendingClaims.get(id));
      pendingClaims.delete(id);
      const conv = convs.get(id);
      if (conv) markClosed(conv);
    } else if (f.status === "queued") {
      const conv = convs.get(id);
      if (conv && conv.status !== "closed") conv.status = "queued";
    }
    renderSidebar();
    renderPane();
  }

  function markClosed(conv) {
    if (conv.status === "closed") return;
    conv.status = "closed";
    stopTyping(conv);
    setVisitorTyping(conv, false);
    if (!conv.closing) {
      toast(`The conversation with ${customerOf(conv.item).name} has ended.`, "info");
    }
    conv.closing = false;
    renderSidebar();
    if (isViewing(conv)) renderPane();
  }

  function onError(f) {
    const code = String(f.code || "error");
    const id = f.conversation_id ? String(f.conversation_id) : "";
    if (id && pendingClaims.has(id)) {
      clearTimeout(pendingClaims.get(id));
      pendingClaims.delete(id);
    }
    if (code === "consent_withdrawn" && id && convs.has(id)) {
      const conv = convs.get(id);
      conv.paused = true;
      failPending(conv, "Not sent: the customer withdrew consent");
    }
    if (code === "conversation_closed" && id && convs.has(id)) {
      const conv = convs.get(id);
      conv.closing = true; // no "ended" toast on top of this one
      markClosed(conv);
      for (const p of conv.pending.values()) p.node.classList.add("msg-failed");
      refreshPendingLabels();
    }
    toast(ERROR_TEXT[code] || f.message || `Error: ${code}`);
    renderPane();
  }

  /* ------------------------------------------------------------------ sending */

  function sendMessage(conv, body) {
    if (!body.trim()) return false;
    if (body.length > MAX_BODY) {
      toast(ERROR_TEXT.body_too_long);
      return false;
    }
    if (conv.status !== "active") return false;
    if (conv.paused) {
      toast(ERROR_TEXT.consent_withdrawn);
      return false;
    }
    const cid = newId();
    const node = renderMessage({ sender: "agent", author: ME.displayName, body, sent_at: null }, true);
    conv.pending.set(cid, { body, node });
    conv.pend.appendChild(node);
    send({ type: "message", conversation_id: conv.id, body, client_msg_id: cid });
    stopTyping(conv);
    refreshPendingLabels();
    scrollToBottom();
    return true;
  }

  function refreshPendingLabels() {
    const online = Boolean(ws && ws.readyState === WebSocket.OPEN);
    for (const conv of convs.values()) {
      for (const p of conv.pending.values()) {
        const label = p.node.querySelector(".msg-meta");
        if (!label) continue;
        if (p.node.classList.contains("msg-failed")) label.textContent = p.node.dataset.reason || "Not sent: conversation closed";
        else label.textContent = online ? "Sending…" : "Waiting for connection…";
      }
    }
  }

  function noteTyping(conv) {
    if (conv.status !== "active") return;
    if (!ui.input.value.trim()) {
      stopTyping(conv);
      return;
    }
    const now = Date.now();
    if (now - conv.typingSentAt >= TYPING_REPEAT_MS) {
      if (send({ type: "typing", conversation_id: conv.id, state: true })) {
        conv.typingOn = true;
        conv.typingSentAt = now;
      }
    }
    clearTimeout(conv.typingIdle);
    conv.typingIdle = setTimeout(() => stopTyping(conv), TYPING_IDLE_MS);
  }

  function stopTyping(conv) {
    clearTimeout(conv.typingIdle);
    conv.typingIdle = null;
    if (conv.typingOn) {
      send({ type: "typing", conversation_id: conv.id, state: false });
      conv.typingOn = false;
      conv.typingSentAt = 0;
    }
  }

  function claim(id) {
    if (pendingClaims.has(id)) return;
    if (!send({ type: "claim", conversation_id: id })) {
      toast("Not connected. Try again in a moment.");
      return;
    }
    pendingClaims.set(
      id,
      setTimeout(() => {
        pendingClaims.delete(id);
        toast("The server did not answer the claim. Please try again.");
        renderPane();
      }, CLAIM_TIMEOUT_MS),
    );
    renderPane();
  }

  /* ------------------------------------------------------------------ rendering */

  function renderMessage(m, pending = false) {
    const sender = m.sender === "visitor" || m.sender === "agent" ? m.sender : "system";
    const li = el("li", `msg msg-${sender}`);
    if (m.seq !== undefined && m.seq !== null) li.dataset.seq = String(m.seq);
    if (sender === "system") {
      li.appendChild(el("span", "msg-system-text", m.body));
      const t = clock(m.sent_at);
      if (t) li.appendChild(el("span", "msg-system-time", t));
      return li;
    }
    li.appendChild(el("div", "bubble", m.body));
    if (pending) {
      li.classList.add("msg-pending");
      li.appendChild(el("div", "msg-meta", "Sending…"));
    } else {
      const who = m.author || (sender === "agent" ? "Agent" : "Visitor");
      const meta = el("div", "msg-meta", [who, clock(m.sent_at)].filter(Boolean).join(" · "));
      const d = toDate(m.sent_at);
      if (d) meta.title = d.toLocaleString();
      li.appendChild(meta);
    }
    return li;
  }

  function isViewing(conv) {
    return Boolean(selected && selected.kind === "conv" && selected.id === conv.id);
  }

  function isNearBottom() {
    const s = ui.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  function scrollToBottom() {
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
  }

  function totalUnread() {
    let n = 0;
    for (const conv of convs.values()) n += conv.unread;
    return n;
  }

  /** "(unread) N waiting · Agent dashboard": work can be noticed from another tab. */
  function updateTitle() {
    const n = totalUnread();
    const waiting = queuedCount();
    const parts = [n ? `(${n})` : "", waiting ? `${waiting} waiting ·` : "", BASE_TITLE];
    document.title = parts.filter(Boolean).join(" ");
  }

  function lastMessageOf(id) {
    const conv = convs.get(id);
    if (conv && conv.messages.size) return conv.messages.get(conv.lastSeq);
    const item = queueItems.get(id);
    return item ? item.last_message : null;
  }

  function previewText(id) {
    const conv = convs.get(id);
    if (conv && conv.visitorTyping) return { text: "typing…", cls: "is-typing" };
    const m = lastMessageOf(id);
    const item = queueItems.get(id);
    if ((!m || !m.body) && item && item.restricted) return { text: "Messages hidden", cls: "is-empty" };
    if (!m || !m.body) return { text: "No messages yet", cls: "is-empty" };
    const body = String(m.body).replace(/\s+/g, " ").slice(0, 140);
    if (m.sender === "agent") return { text: `${m.author === ME.displayName ? "You" : m.author || "Agent"}: ${body}`, cls: "" };
    if (m.sender === "system") return { text: body, cls: "is-system" };
    return { text: body, cls: "" };
  }

  /** One sidebar entry; the node is rebuilt in place so ordering and focus stay stable. */
  function fillItem(button, id, group) {
    const item = queueItems.get(id) || (convs.get(id) && convs.get(id).item) || {};
    const conv = convs.get(id);
    const who = customerOf(item);
    button.textContent = "";
    button.className = "conv-item";
    button.dataset.id = id;
    button.dataset.group = group;
    const isSel = selected && selected.id === id;
    button.classList.toggle("is-selected", Boolean(isSel));
    if (isSel) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");

    const av = el("span");
    setAvatar(av, who.name, who.email || id);
    av.setAttribute("aria-hidden", "true");

    const body = el("span", "conv-item-body");
    const top = el("span", "conv-item-top");
    top.appendChild(el("span", "conv-item-name", who.name));
    let when;
    if (group === "queue") {
      when = el("span", "conv-item-time wait", waitingText(item.waiting_since));
      when.dataset.since = item.waiting_since == null ? "" : String(item.waiting_since);
    } else if (group === "others") {
      when = el("span", "conv-item-time", item.agent || "another agent");
    } else {
      const m = lastMessageOf(id);
      when = el("span", "conv-item-time", m ? clock(m.sent_at) : "");
    }
    top.appendChild(when);
    body.appendChild(top);
    if (who.company) body.appendChild(el("span", "conv-item-company", who.company));
    const pv = previewText(id);
    body.appendChild(el("span", `conv-item-preview ${pv.cls}`.trim(), pv.text));

    button.append(av, body);
    const tags = el("span", "conv-item-tags");
    if (conv && conv.unread) {
      const badge = el("span", "unread-badge", conv.unread > 99 ? "99+" : conv.unread);
      badge.setAttribute("aria-label", `${conv.unread} unread`);
      tags.appendChild(badge);
    }
    let fresh = false;
    if (group === "queue") { // a visitor's message I have not looked at yet
      const last = Number(item.last_seq) || 0;
      if (isSel && !document.hidden) queueSeen.set(id, last);
      fresh = Boolean(item.last_message && item.last_message.sender === "visitor" && last > (queueSeen.get(id) || 0));
      if (fresh) tags.appendChild(el("span", "mini-tag new-tag", "New"));
    }
    button.classList.toggle("is-unread", Boolean(fresh || (conv && conv.unread)));
    if (conv && conv.status === "closed") tags.appendChild(el("span", "mini-tag", "Closed"));
    const left = group === "mine" && conv && conv.status === "active" && conv.visitorOnline === false;
    if (left) tags.appendChild(el("span", "mini-tag left-tag", "Offline"));
    handoverTags(item, conv, group, tags);
    if (pendingClaims.has(id)) tags.appendChild(el("span", "mini-tag", "Claiming…"));
    if (tags.childNodes.length) button.appendChild(tags);
    const label = [who.name, who.company, group === "queue" ? waitingText(item.waiting_since) : "",
      left ? "offline" : ""]
      .filter(Boolean)
      .join(", ");
    button.setAttribute("aria-label", conv && conv.unread ? `${label}, ${conv.unread} unread`
      : fresh ? `${label}, new message` : label);
  }

  function syncList(group, ids) {
    const ul = ui.lists[group];
    const existing = new Map();
    for (const li of Array.from(ul.children)) existing.set(li.dataset.id, li);
    const wanted = [];
    for (const id of ids) {
      let li = existing.get(id);
      if (!li) {
        li = el("li");
        li.dataset.id = id;
        li.appendChild(el("button"));
        li.firstChild.type = "button";
      }
      existing.delete(id);
      fillItem(li.firstChild, id, group);
      wanted.push(li);
    }
    for (const li of existing.values()) li.remove();
    // Reorder only when needed: moving a focused node would drop keyboard focus.
    wanted.forEach((li, i) => {
      if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
    });
    // A cut queue frame lists the oldest waiting: the count says how many wait in all.
    const shown = group === "queue" && queueCounts.omitted ? Math.max(ids.length, queuedCount()) : ids.length;
    ui.counts[group].textContent = String(shown);
    ui.empties[group].hidden = ids.length > 0;
    if (group === "queue") {
      // Past the page the server sends, say how many more wait, rather than list them silently short.
      const more = $("more-queue");
      const hidden = shown - ids.length;
      more.hidden = hidden <= 0;
      more.textContent = hidden > 0 ? `${hidden} more waiting; the ${ids.length} who have waited longest are listed.` : "";
    }
  }

  function sortTime(value) {
    const d = toDate(value);
    return d ? d.getTime() : 0;
  }

  function renderSidebar() {
    const queued = [];
    const others = [];
    for (const [id, item] of queueItems) {
      if (convs.has(id)) continue;
      if (item.status === "queued") queued.push(id);
      else if (item.status === "active" && !isMine(item)) others.push(id);
    }
    queued.sort((a, b) => sortTime(queueItems.get(a).waiting_since) - sortTime(queueItems.get(b).waiting_since));
    const mine = Array.from(convs.keys());
    // Open ones first (most recent activity on top), closed ones after.
    mine.sort((a, b) => {
      const ca = convs.get(a);
      const cb = convs.get(b);
      const closedA = ca.status === "closed" ? 1 : 0;
      const closedB = cb.status === "closed" ? 1 : 0;
      if (closedA !== closedB) return closedA - closedB;
      const ma = lastMessageOf(a);
      const mb = lastMessageOf(b);
      return sortTime(mb && mb.sent_at) - sortTime(ma && ma.sent_at);
    });
    syncList("queue", queued);
    syncList("mine", mine);
    syncList("others", others);
    updateTitle();
  }

  function refreshWaiting() {
    for (const node of document.querySelectorAll(".wait[data-since]")) {
      node.textContent = waitingText(node.dataset.since || null);
    }
    const pw = document.getElementById("preview-wait");
    if (pw) pw.textContent = waitDuration(pw.dataset.since || null);
  }
  setInterval(refreshWaiting, WAIT_REFRESH_MS);

  function consentText(item) {
    return item && item.policy_version ? `Consented to policy v${item.policy_version}` : "No consent on record";
  }

  function renderPreview(id) {
    const item = queueItems.get(id);
    const box = ui.preview;
    box.textContent = "";
    if (!item) {
      box.appendChild(el("p", "muted preview-gone", "This conversation is no longer in the queue."));
      return;
    }
    const who = customerOf(item);
    const card = el("div", "preview-card");
    const head = el("div", "preview-head");
    const av = el("span");
    setAvatar(av, who.name, who.email || id);
    av.setAttribute("aria-hidden", "true");
    const title = el("div");
    const h = el("h2", "preview-name", who.name);
    h.id = "preview-name";
    title.appendChild(h);
    const meta = el("div", "conv-meta");
    if (who.email) meta.appendChild(el("span", "", who.email));
    if (who.company) meta.appendChild(el("span", "", who.company));
    title.appendChild(meta);
    if (!item.restricted) title.appendChild(el("div", "consent", consentText(item)));
    head.append(av, title);
    card.appendChild(head);

    const facts = el("dl", "facts");
    const addFact = (k, v, node) => {
      facts.appendChild(el("dt", "", k));
      const dd = el("dd", "", v);
      if (node) dd.appendChild(node);
      facts.appendChild(dd);
    };
    if (item.status === "queued") {
      const w = el("span", "", waitDuration(item.waiting_since));
      w.id = "preview-wait";
      w.dataset.since = item.waiting_since == null ? "" : String(item.waiting_since);
      addFact("Waiting", "", w);
    } else {
      addFact("Handled by", item.agent || "another agent");
    }
    const d = toDate(item.waiting_since);
    if (d) addFact("Started", d.toLocaleString());
    addFact("Messages", String(item.last_seq || 0));
    card.appendChild(facts);

    const lm = item.last_message;
    if (item.status === "queued") {
      card.appendChild(el("h3", "preview-sub", "Conversation so far"));
      const box = el("div", "peek-box");
      const list = el("ol", "msg-list");
      list.id = "peek-list";
      const msgs = peek.id === id ? Array.from(peek.messages.values()) : [];
      if (!msgs.length && lm && lm.body) msgs.push(lm);
      msgs.sort((a, b) => a.seq - b.seq);
      for (const m of msgs) list.appendChild(renderMessage(m));
      const empty = el("p", "muted peek-empty", "The visitor has not written anything yet.");
      empty.id = "peek-empty";
      empty.hidden = msgs.length > 0;
      box.append(list, empty);
      card.appendChild(box);
    } else {
      card.appendChild(el("h3", "preview-sub", "Latest message"));
      if (item.restricted) {
        // The server sends other agents' conversations without their text.
        if (ME.role === "admin") {
          const p = el("p", "muted", "Its messages are not shown here. ");
          const a = el("a", "", "Read it in the admin console");
          a.href = `/admin#/conversations/${encodeURIComponent(id)}`;
          p.append(a, document.createTextNode(" (the reading is recorded in the audit log)."));
          card.appendChild(p);
        } else {
          card.appendChild(el("p", "muted", "Only the agent handling this conversation sees its messages."));
        }
      } else if (lm && lm.body) {
        const list = el("ol", "msg-list preview-msg");
        list.appendChild(renderMessage(lm));
        card.appendChild(list);
      } else {
        card.appendChild(el("p", "muted", "No messages yet."));
      }
    }

    const actions = el("div", "preview-actions");
    if (item.status === "queued") {
      const btn = el("button", "claim-button", pendingClaims.has(id) ? "Claiming…" : "Claim");
      btn.type = "button";
      btn.disabled = pendingClaims.has(id) || !(ws && ws.readyState === WebSocket.OPEN);
      btn.addEventListener("click", () => claim(id));
      actions.appendChild(btn);
      actions.appendChild(el("span", "muted", "Claiming assigns this conversation to you and lets the visitor know."));
    } else {
      card.classList.add("is-readonly");
      actions.appendChild(el("span", "readonly-note", `Read-only: ${item.agent || "another agent"} is handling this conversation.`));
      takeOverAction(id, item, actions);
    }
    card.appendChild(actions);
    box.appendChild(card);
    const peekBox = card.querySelector(".peek-box");
    if (peekBox) peekBox.scrollTop = peekBox.scrollHeight;
    peekAt(id);
  }

  function renderTyping(conv) {
    ui.typing.textContent = "";
    if (!conv.visitorTyping) {
      ui.typing.classList.remove("is-on");
      return;
    }
    ui.typing.classList.add("is-on");
    const dots = el("span", "dots");
    dots.setAttribute("aria-hidden", "true");
    dots.append(el("span"), el("span"), el("span"));
    ui.typing.append(dots, el("span", "", `${customerOf(conv.item).name} is typing…`));
  }

  let shownConvId = null;

  function renderConv(conv) {
    const item = conv.item || {};
    const who = customerOf(item);
    setAvatar(ui.convAvatar, who.name, who.email || conv.id);
    ui.convName.textContent = who.name;
    ui.convEmail.textContent = who.email;
    ui.convEmail.hidden = !who.email;
    ui.convCompany.textContent = who.company;
    ui.convCompany.hidden = !who.company;
    ui.convConsent.textContent = consentText(item);
    renderPresence(conv);

    const closed = conv.status === "closed";
    const active = conv.status === "active";
    const moved = conv.status === "moved";
    ui.convStatus.textContent = closed ? "Closed" : active ? (conv.paused ? "Paused" : "Active") : moved ? "Handed over" : "Released";
    ui.convStatus.className = `status-tag status-${closed ? "closed" : active ? (conv.paused ? "queued" : "active") : "queued"}`;
    ui.convClose.hidden = !active;
    ui.convClose.disabled = conv.closing;
    ui.convDismiss.hidden = active;
    ui.composer.hidden = !active;
    ui.closedNote.hidden = active;
    ui.closedNote.textContent = closed ? "This conversation is closed." : movedText(conv);
    renderHandover(conv);

    if (shownConvId !== conv.id) {
      const prev = shownConvId && convs.get(shownConvId);
      if (prev) {
        prev.scrollTop = ui.scroller.scrollTop;
        prev.draft = ui.input.value;
        stopTyping(prev);
      }
      ui.scroller.textContent = "";
      ui.scroller.appendChild(conv.wrap);
      ui.input.value = conv.draft;
      shownConvId = conv.id;
      if (conv.scrollTop === null) scrollToBottom();
      else ui.scroller.scrollTop = conv.scrollTop;
      if (active) ui.input.focus({ preventScroll: true });
    }
    renderTyping(conv);
  }

  function leaveConv() {
    if (!shownConvId) return;
    const prev = convs.get(shownConvId);
    if (prev) {
      prev.scrollTop = ui.scroller.scrollTop;
      prev.draft = ui.input.value;
      stopTyping(prev);
    }
    ui.scroller.textContent = "";
    shownConvId = null;
  }

  function renderPane() {
    const conv = selected && selected.kind === "conv" ? convs.get(selected.id) : null;
    const previewing = selected && selected.kind === "preview";
    ui.paneEmpty.hidden = Boolean(conv || previewing);
    ui.preview.hidden = !previewing;
    ui.conv.hidden = !conv;
    forgetHidden(conv, previewing);
    if (conv) {
      renderConv(conv);
    } else {
      leaveConv();
      if (previewing) {
        if (convs.has(selected.id)) {
          selected = { kind: "conv", id: selected.id };
          renderPane();
          return;
        }
        renderPreview(selected.id);
      }
    }
  }

  function select(kind, id) {
    if (kind === "conv" && !convs.has(id)) kind = "preview";
    selected = id ? { kind, id } : null;
    if (kind === "conv") {
      const conv = convs.get(id);
      if (conv.unread) {
        conv.unread = 0;
      }
    }
    renderPane();
    renderSidebar();
    if (kind === "conv") markRead(convs.get(id));
    if (window.matchMedia && window.matchMedia("(max-width: 760px)").matches) {
      document.getElementById("pane").scrollIntoView({ block: "start" });
    }
  }

  /* ------------------------------------------------------------------ handover
   * Transfer, take over, paused and erased conversations, the away state and display name,
   * and noticing work (tab title, screen-reader announcements, opt-in desktop alerts). The rest
   * of the dashboard calls in through: statusFor, onHandoverStatus, onErased, failPending,
   * renderHandover, takeOverAction, handoverTags, noticeWork, queuedCount, movedText.
   */

  /** A conversation of this dashboard as its queue item says: another agent's is "moved". */
  function statusFor(item) {
    return item.status === "active" && !isMine(item) ? "moved" : item.status;
  }

  function movedText(conv) {
    if (conv.status === "moved") {
      return `This conversation is now handled by ${conv.movedTo || (conv.item && conv.item.agent) || "another agent"}.`;
    }
    return "This conversation is no longer assigned to you.";
  }

  function queuedCount() {
    if (queueCounts.omitted && queueCounts.queued !== null) {
      // Waiting beyond the page count too (those I opened are still counted as waiting).
      let open = 0;
      for (const [id, item] of queueItems) if (item.status === "queued" && convs.has(id)) open += 1;
      return Math.max(0, queueCounts.queued - open);
    }
    let n = 0;
    for (const [id, item] of queueItems) if (item.status === "queued" && !convs.has(id)) n += 1;
    return n;
  }

  /** Status frames about consent, and about conversations that moved; true when handled. */
  function onHandoverStatus(f) {
    const id = String(f.conversation_id);
    const conv = convs.get(id);
    const item = queueItems.get(id);
    const who = customerOf((conv && conv.item) || item).name;
    if (typeof f.paused === "boolean") {
      if (item) item.paused = f.paused;
      if (conv && conv.paused !== f.paused) {
        conv.paused = f.paused;
        const text = f.paused
          ? `${who} withdrew their consent: the conversation is paused.`
          : `${who} consented again: the conversation can go on.`;
        toast(text, "info");
        announce(text);
      }
      return true;
    }
    const mine = f.agent_id !== undefined && f.agent_id !== null && String(f.agent_id) === ME.id;
    if (item) {
      item.status = f.status;
      if (f.agent_name !== undefined) item.agent = f.agent_name;
      if (f.agent_id !== undefined) item.agent_id = f.agent_id;
    }
    if (f.renamed === true && mine && conv) {
      // My new display name (perhaps set by an admin) goes on my earlier messages too: a
      // replay relabels them. Only in my own conversations: an admin's replay of someone
      // else's is a read the audit log records, and a rename is not the admin reading.
      if (f.agent) {
        ME.displayName = f.agent;
        ui.profileName.textContent = f.agent;
      }
      send({ type: "resume", conversation_id: id, after_seq: 0 });
    }
    if (f.status === "active" && !mine && conv && conv.status !== "closed") {
      conv.status = "moved";
      conv.movedTo = f.agent_name || f.agent || "";
      stopTyping(conv);
      setVisitorTyping(conv, false);
      if (transferFor === id) closeTransfer();
      const text = `The conversation with ${who} is now handled by ${conv.movedTo || "another agent"}.`;
      if (!conv.transferring) toast(text, "info");
      announce(text);
      conv.transferring = false;
      return true;
    }
    if (f.status === "active" && mine && conv && conv.status !== "active" && conv.status !== "closed") {
      // Handed back to me: catch up on what was said meanwhile.
      send({ type: "resume", conversation_id: id, after_seq: conv.lastSeq });
    }
    if (f.status === "active" && mine && !pendingClaims.has(id) && f.previous_agent_id !== undefined
        && String(f.previous_agent_id) !== ME.id) {
      beep();
      noticeWork(`The conversation with ${who} was handed to you.`, "A conversation was handed to you.");
    }
    if (f.status === "queued" && conv) {
      conv.transferring = false;
      if (transferFor === id) closeTransfer();
    }
    return false;
  }

  /** The customer was erased: nothing of these conversations stays on screen. */
  function onErased(f) {
    const ids = Array.isArray(f.conversation_ids) ? f.conversation_ids.map(String) : [];
    let seen = false;
    for (const id of ids) {
      const conv = convs.get(id);
      if (conv) {
        clearTimeout(conv.visitorTypingTimer);
        clearTimeout(conv.typingIdle);
        conv.wrap.remove();
        convs.delete(id);
        seen = true;
      }
      if (queueItems.delete(id)) seen = true;
      if (pendingClaims.has(id)) {
        clearTimeout(pendingClaims.get(id));
        pendingClaims.delete(id);
      }
      if (knownIds) knownIds.delete(id);
      if (peek.id === id) peek = { id: null, messages: new Map(), lastSeq: 0, asked: -1 };
      if (transferFor === id) closeTransfer();
      if (shownConvId === id) {
        ui.scroller.textContent = "";
        ui.input.value = "";
        ui.typing.textContent = "";
        shownConvId = null;
      }
      if (selected && selected.id === id) selected = null;
    }
    if (seen) {
      // Earlier notices may name the customer: they go too.
      ui.toasts.textContent = "";
      const text = "A conversation was erased at the customer's request; nothing of it is kept here.";
      toast(text, "info");
      announce(text);
    }
    renderPane();
    renderSidebar();
  }

  function failPending(conv, reason) {
    for (const [cid, p] of conv.pending) {
      p.node.classList.add("msg-failed");
      p.node.dataset.reason = reason;
      conv.pending.delete(cid); // never resent: the server would refuse it again
      const label = p.node.querySelector(".msg-meta");
      if (label) label.textContent = reason;
    }
  }

  /** Hidden panes keep no customer's details: nothing is left in the page once a
   * conversation is gone (erased, dismissed). */
  function forgetHidden(conv, previewing) {
    if (!previewing) ui.preview.textContent = "";
    if (!conv) {
      for (const node of [ui.convName, ui.convEmail, ui.convCompany, ui.convConsent, ui.convAvatar]) {
        node.textContent = "";
      }
      closeTransfer();
    }
  }

  function renderHandover(conv) {
    const active = conv.status === "active";
    ui.transferButton.hidden = !active;
    if (!active || transferFor !== conv.id) closeTransfer();
    ui.pausedNote.hidden = !(active && conv.paused);
    ui.convConsent.classList.toggle("consent-withdrawn", Boolean(conv.paused));
    if (conv.paused) ui.convConsent.textContent = "Consent withdrawn";
    if (active && conv.paused) ui.composer.hidden = true;
  }

  function handoverTags(item, conv, group, tags) {
    const paused = conv ? conv.paused && conv.status === "active" : item.paused;
    if (paused) tags.appendChild(el("span", "mini-tag mini-paused", "Paused"));
    if (conv && conv.status === "moved") tags.appendChild(el("span", "mini-tag", "Handed over"));
    if (group === "others" && item.agent_online === false) {
      tags.appendChild(el("span", "mini-tag mini-unattended", "Unattended"));
    }
  }

  /** "Take over" on another agent's conversation whose agent is away or gone (admins: any). */
  function takeOverAction(id, item, actions) {
    if (item.status !== "active" || isMine(item)) return;
    const unattended = item.agent_online === false;
    if (!unattended && ME.role !== "admin") return;
    const btn = el("button", "claim-button take-over", pendingClaims.has(id) ? "Taking over…" : "Take over");
    btn.type = "button";
    btn.disabled = pendingClaims.has(id) || !(ws && ws.readyState === WebSocket.OPEN);
    btn.addEventListener("click", () => takeOver(id));
    actions.appendChild(btn);
    actions.appendChild(el("span", "muted", unattended
      ? "Its agent is away or has no dashboard open: you can take it over."
      : "As an admin you can take over any conversation."));
  }

  function takeOver(id) {
    if (pendingClaims.has(id)) return;
    if (!send({ type: "transfer", conversation_id: id, to: ME.name })) {
      toast("Not connected. Try again in a moment.");
      return;
    }
    pendingClaims.set(id, setTimeout(() => {
      pendingClaims.delete(id);
      toast("The server did not answer. Please try again.");
      renderPane();
    }, CLAIM_TIMEOUT_MS));
    renderPane();
  }

  /* transfer form */

  let transferFor = null;

  function closeTransfer() {
    transferFor = null;
    ui.transferForm.hidden = true;
    ui.transferButton.setAttribute("aria-expanded", "false");
  }

  async function openTransfer(conv) {
    transferFor = conv.id;
    ui.transferTo.textContent = "";
    ui.transferTo.appendChild(el("option", "", "Loading…"));
    ui.transferForm.hidden = false;
    ui.transferButton.setAttribute("aria-expanded", "true");
    let staff = [];
    try {
      const r = await fetch("/api/staff/colleagues", { credentials: "same-origin", cache: "no-store" });
      if (r.ok) staff = (await r.json()).staff || [];
    } catch (_) {
      /* the queue option still works */
    }
    if (transferFor !== conv.id) return;
    ui.transferTo.textContent = "";
    for (const s of staff) {
      if (s.name === ME.name) continue;
      const state = s.away ? "away" : s.online ? "online" : "offline";
      const opt = el("option", "", `${s.display_name} (${s.name}) · ${state}`);
      opt.value = s.name;
      opt.disabled = Boolean(s.away);
      ui.transferTo.appendChild(opt);
    }
    const queue = el("option", "", "Back to the queue");
    queue.value = "";
    ui.transferTo.appendChild(queue);
    const first = Array.from(ui.transferTo.options).find((o) => !o.disabled);
    if (first) ui.transferTo.value = first.value;
    ui.transferTo.focus();
  }

  ui.transferButton.addEventListener("click", () => {
    const conv = shownConvId && convs.get(shownConvId);
    if (!conv) return;
    if (transferFor === conv.id) closeTransfer();
    else openTransfer(conv);
  });
  ui.transferCancel.addEventListener("click", () => {
    closeTransfer();
    ui.transferButton.focus();
  });
  ui.transferForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const conv = transferFor && convs.get(transferFor);
    if (!conv || conv.status !== "active") return closeTransfer();
    const to = ui.transferTo.value || null;
    if (!send({ type: "transfer", conversation_id: conv.id, to })) {
      toast("Not connected. Try again in a moment.");
      return;
    }
    conv.transferring = true;
    closeTransfer();
    toast(to ? "Handing the conversation over…" : "Returning the conversation to the queue…", "info");
  });

  /* noticing work: announcements and desktop alerts */

  function announce(text) {
    ui.announcer.textContent = "";
    // A fresh text node after a tick, so the same words are announced again.
    setTimeout(() => {
      ui.announcer.textContent = text;
    }, 60);
  }

  let notifyOn = false;
  const canNotify = typeof window.Notification === "function";
  try {
    notifyOn = canNotify && window.localStorage.getItem("dashboard.notify") === "on"
      && window.Notification.permission === "granted";
  } catch (_) {
    /* storage may be blocked */
  }

  function renderNotifyButton() {
    ui.notify.hidden = !canNotify;
    ui.notify.textContent = notifyOn ? "Desktop alerts on" : "Desktop alerts off";
    ui.notify.setAttribute("aria-pressed", notifyOn ? "true" : "false");
    ui.notify.classList.toggle("is-off", !notifyOn);
  }

  ui.notify.addEventListener("click", async () => {
    if (!notifyOn && window.Notification.permission !== "granted") {
      let answer = "denied";
      try {
        answer = await window.Notification.requestPermission();
      } catch (_) {
        /* older browsers */
      }
      if (answer !== "granted") {
        toast("Desktop alerts are blocked for this site in the browser's settings.");
        return;
      }
    }
    notifyOn = !notifyOn;
    try {
      window.localStorage.setItem("dashboard.notify", notifyOn ? "on" : "off");
    } catch (_) {
      /* ignore */
    }
    renderNotifyButton();
  });
  renderNotifyButton();

  /** Screen readers always; a desktop alert (opt-in) while the dashboard is out of sight. Alerts
   * carry no customer's words or name: they may show on a screen others see. */
  function noticeWork(text, alertText) {
    announce(text);
    if (!notifyOn || !canNotify || window.Notification.permission !== "granted") return;
    if (!document.hidden && document.hasFocus()) return;
    try {
      const n = new window.Notification(BASE_TITLE, { body: alertText || text, tag: "dashboard-work" });
      n.onclick = () => {
        window.focus();
        n.close();
      };
    } catch (_) {
      /* some browsers allow alerts only from a service worker */
    }
  }

  /* away state and the display name customers see */

  let away = false;

  function renderAway() {
    ui.away.textContent = away ? "Away" : "Available";
    ui.away.setAttribute("aria-pressed", away ? "true" : "false");
    ui.away.classList.toggle("is-away", away);
  }

  async function patchMe(body) {
    const r = await fetch("/api/staff/me", {
      method: "PATCH",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let data = null;
    try {
      data = await r.json();
    } catch (_) {
      /* not JSON */
    }
    if (!r.ok) throw new Error((data && data.message) || "That did not work. Please try again.");
    return data.staff;
  }

  ui.away.addEventListener("click", () => {
    patchMe({ away: !away })
      .then((me) => {
        away = Boolean(me.away);
        renderAway();
        announce(away ? "You are away: no conversations are handed to you." : "You are available.");
      })
      .catch((e) => toast(e.message));
  });

  fetch("/api/staff/me", { credentials: "same-origin", cache: "no-store" })
    .then((r) => (r.ok ? r.json() : null))
    .then((data) => {
      if (data && data.staff) {
        away = Boolean(data.staff.away);
        renderAway();
      }
    })
    .catch(() => {});
  renderAway();

  ui.profileOpen.addEventListener("click", () => {
    ui.profileInput.value = ME.displayName;
    ui.profileError.hidden = true;
    if (typeof ui.profileDialog.showModal === "function") ui.profileDialog.showModal();
    else ui.profileDialog.setAttribute("open", "");
    ui.profileInput.focus();
    ui.profileInput.select();
  });
  ui.profileCancel.addEventListener("click", () => ui.profileDialog.close());
  ui.profileForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    patchMe({ display_name: ui.profileInput.value })
      .then((me) => {
        ME.displayName = me.display_name;
        ui.profileName.textContent = me.display_name;
        ui.profileDialog.close();
        // "Sam S." must not end in two full stops.
        const stop = /[.!?]$/.test(me.display_name) ? "" : ".";
        toast(`Customers now see you as ${me.display_name}${stop}`, "info");
        ui.profileOpen.focus();
      })
      .catch((e) => {
        ui.profileError.textContent = e.message;
        ui.profileError.hidden = false;
      });
  });

  /* ------------------------------------------------------------------ events */

  for (const group of Object.keys(ui.lists)) {
    ui.lists[group].addEventListener("click", (ev) => {
      const button = ev.target.closest("button.conv-item");
      if (!button) return;
      const id = button.dataset.id;
      select(convs.has(id) ? "conv" : "preview", id);
    });
  }

  ui.composer.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const conv = shownConvId && convs.get(shownConvId);
    if (!conv) return;
    if (sendMessage(conv, ui.input.value)) {
      ui.input.value = "";
      conv.draft = "";
    }
    ui.input.focus();
  });

  ui.input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
      ev.preventDefault();
      ui.composer.requestSubmit ? ui.composer.requestSubmit() : ui.composer.dispatchEvent(new Event("submit", { cancelable: true }));
    }
  });

  ui.input.addEventListener("input", () => {
    const conv = shownConvId && convs.get(shownConvId);
    if (conv) noteTyping(conv);
  });

  ui.input.addEventListener("blur", () => {
    const conv = shownConvId && convs.get(shownConvId);
    if (conv) stopTyping(conv);
  });

  ui.convClose.addEventListener("click", () => {
    const conv = shownConvId && convs.get(shownConvId);
    if (!conv || conv.status !== "active") return;
    const who = customerOf(conv.item).name;
    if (!window.confirm(`Close the conversation with ${who}? The visitor will see that it has ended.`)) return;
    if (!send({ type: "close", conversation_id: conv.id })) {
      toast("Not connected. Try again in a moment.");
      return;
    }
    conv.closing = true;
    stopTyping(conv);
    renderPane();
  });

  ui.convDismiss.addEventListener("click", () => {
    const conv = shownConvId && convs.get(shownConvId);
    if (!conv || conv.status === "active") return;
    leaveConv();
    convs.delete(conv.id);
    selected = null;
    renderPane();
    renderSidebar();
  });

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    const conv = selected && selected.kind === "conv" ? convs.get(selected.id) : null;
    if (conv) markRead(conv);
    if (conv && conv.unread) {
      conv.unread = 0;
    }
    renderSidebar(); // clears "New" on a previewed queue item too
    if (!ws && reconnectTimer) reconnectNow();
  });

  window.addEventListener("focus", () => {
    const conv = selected && selected.kind === "conv" ? convs.get(selected.id) : null;
    if (conv && conv.unread) {
      conv.unread = 0;
      renderSidebar();
    }
  });

  window.addEventListener("beforeunload", () => {
    for (const conv of convs.values()) stopTyping(conv);
  });

  /* ------------------------------------------------------------------ notes and ratings */
  // Staff-only notes (issue 12): stored apart from messages, never sent to the customer. A note
  // takes no seq of its own: it follows the message whose seq it carries, and note_id names it.

  function noteNode(f) {
    const li = el("li", "msg msg-note");
    // Sorts after the message it follows and before the next one (see insertBySeq).
    li.dataset.seq = String(Number(f.seq) + 0.5);
    li.dataset.noteId = String(f.note_id);
    li.appendChild(el("div", "note-label", "Note · only staff see this"));
    li.appendChild(el("div", "bubble", f.body));
    li.appendChild(el("div", "msg-meta", [f.author, clock(f.sent_at)].filter(Boolean).join(" · ")));
    return li;
  }

  function onNote(f) {
    const conv = convs.get(String(f.conversation_id || ""));
    if (!conv || !Number.isFinite(Number(f.seq))) return; // previews show messages only
    if (!conv.notes) conv.notes = new Set();
    const key = String(f.note_id);
    if (conv.notes.has(key)) return;
    conv.notes.add(key);
    const nearBottom = isViewing(conv) && isNearBottom();
    const node = noteNode(f);
    const last = conv.list.lastElementChild;
    if (!last || Number(last.dataset.seq) <= Number(node.dataset.seq)) conv.list.appendChild(node);
    else insertBySeq(conv, node, Number(node.dataset.seq));
    if (nearBottom || f.author === ME.displayName) scrollToBottom();
  }

  function onNoteAck(f) {
    const conv = convs.get(String(f.conversation_id || ""));
    const p = conv && conv.pendingNotes && conv.pendingNotes.get(f.client_msg_id);
    if (!p) return;
    conv.pendingNotes.delete(f.client_msg_id);
    // The ack can beat the relayed copy: show the stored note now (deduped by note_id).
    onNote({ conversation_id: conv.id, seq: f.seq, note_id: f.note_id, author: ME.displayName,
             body: p.body, sent_at: new Date().toISOString() });
  }

  function sendNote(conv, body) {
    if (!body.trim()) return false;
    if (body.length > MAX_BODY) {
      toast(ERROR_TEXT.body_too_long);
      return false;
    }
    const cid = newId();
    if (!send({ type: "note", conversation_id: conv.id, body, client_msg_id: cid })) {
      toast("Not connected. Try again in a moment.");
      return false;
    }
    if (!conv.pendingNotes) conv.pendingNotes = new Map();
    conv.pendingNotes.set(cid, { body });
    return true;
  }

  function onRating(f) {
    const conv = convs.get(String(f.conversation_id || ""));
    if (!conv || conv.rated) return;
    conv.rated = true;
    const score = Math.max(1, Math.min(5, Number(f.score) || 0));
    const li = el("li", "msg msg-rating");
    li.dataset.seq = String(Number.MAX_SAFE_INTEGER);
    li.appendChild(el("span", "rating-stars", "★".repeat(score) + "☆".repeat(5 - score)));
    li.appendChild(el("span", "rating-text", `${customerOf(conv.item).name} rated this conversation ${score} of 5`));
    if (f.comment) li.appendChild(el("div", "rating-comment", f.comment));
    conv.list.appendChild(li);
    if (isViewing(conv)) scrollToBottom();
  }

  if (ui.noteButton) {
    ui.noteButton.addEventListener("click", () => {
      const conv = shownConvId && convs.get(shownConvId);
      if (!conv) return;
      if (sendNote(conv, ui.input.value)) {
        ui.input.value = "";
        conv.draft = "";
        stopTyping(conv);
      }
      ui.input.focus();
    });
  }

  /* ------------------------------------------------------------------ customer history */
  // Issue 12: the customer's other conversations, read-only, in a dialog. The list holds no
  // text; opening one is a transcript view the server writes to the audit log first.

  const hist = {
    button: $("conv-history"),
    dialog: $("history-dialog"),
    title: $("history-title"),
    list: $("history-list"),
    msg: $("history-msg"),
    view: $("history-view"),
    viewTitle: $("history-view-title"),
    messages: $("history-messages"),
    convId: null,
  };

  async function getJson(path) {
    const res = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    if (!res.ok) throw new Error((data && data.message) || `The server answered ${res.status}.`);
    return data;
  }

  function historyLabel(item) {
    const when = toDate(item.created_at);
    const parts = [when ? when.toLocaleString() : "", item.status === "closed" ? "closed" : item.status,
      `${item.message_count} message${item.message_count === 1 ? "" : "s"}`];
    if (item.agent) parts.push(`with ${item.agent}`);
    if (item.rating) parts.push(`rated ${item.rating} of 5`);
    return parts.filter(Boolean).join(" · ");
  }

  async function openHistory() {
    const conv = shownConvId && convs.get(shownConvId);
    if (!conv) return;
    hist.convId = conv.id;
    hist.title.textContent = `Earlier conversations with ${customerOf(conv.item).name}`;
    hist.list.textContent = "";
    hist.view.hidden = true;
    hist.msg.textContent = "Loading…";
    if (!hist.dialog.open) hist.dialog.showModal();
    let data;
    try {
      data = await getJson(`/api/agent/conversations/${encodeURIComponent(conv.id)}/history`);
    } catch (err) {
      hist.msg.textContent = err.message;
      return;
    }
    if (hist.convId !== conv.id) return;
    const items = Array.isArray(data.conversations) ? data.conversations : [];
    hist.msg.textContent = items.length ? "" : "No earlier conversations.";
    for (const item of items) {
      const li = el("li");
      const b = el("button", "history-item", historyLabel(item));
      b.type = "button";
      b.addEventListener("click", () => openEarlier(conv.id, item));
      li.appendChild(b);
      hist.list.appendChild(li);
    }
  }

  async function openEarlier(convId, item) {
    hist.view.hidden = false;
    hist.viewTitle.textContent = historyLabel(item);
    hist.messages.textContent = "";
    let data;
    try {
      data = await getJson(`/api/agent/conversations/${encodeURIComponent(convId)}/history/${encodeURIComponent(item.id)}`);
    } catch (err) {
      hist.messages.appendChild(el("li", "msg msg-system", err.message));
      return;
    }
    const messages = Array.isArray(data.messages) ? data.messages : [];
    const notes = Array.isArray(data.notes) ? data.notes : [];
    for (const m of messages) {
      hist.messages.appendChild(renderMessage(m));
      for (const n of notes) if (Number(n.seq) === Number(m.seq)) hist.messages.appendChild(noteNode(n));
    }
    if (data.rating) {
      hist.messages.appendChild(el("li", "msg msg-rating",
        `Rated ${data.rating.score} of 5${data.rating.comment ? `: ${data.rating.comment}` : ""}`));
    }
  }

  if (hist.button && hist.dialog) {
    hist.button.addEventListener("click", openHistory);
    $("history-close").addEventListener("click", () => hist.dialog.close());
  }

  /* ------------------------------------------------------------------ blocking abuse */
  // Issue 12: the agent blocks the visitor of their own conversation, with a reason, for a while.

  const blk = {
    button: $("conv-block"),
    dialog: $("block-dialog"),
    form: $("block-form"),
    reason: $("block-reason"),
    hours: $("block-hours"),
    ip: $("block-ip"),
    error: $("block-error"),
    convId: null,
  };

  function openBlock() {
    const conv = shownConvId && convs.get(shownConvId);
    if (!conv) return;
    blk.convId = conv.id;
    blk.reason.value = "";
    blk.ip.checked = false;
    blk.hours.value = "24";
    blk.error.textContent = "";
    blk.dialog.showModal();
    blk.reason.focus();
  }

  async function submitBlock(ev) {
    ev.preventDefault();
    blk.error.textContent = "";
    if (!blk.reason.value.trim()) {
      blk.error.textContent = "Give a reason for the block.";
      return;
    }
    const res = await fetch(`/api/agent/conversations/${encodeURIComponent(blk.convId)}/block`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ reason: blk.reason.value, block_ip: blk.ip.checked, hours: Number(blk.hours.value) }),
    }).catch(() => null);
    let data = null;
    try {
      data = res ? await res.json() : null;
    } catch (_) {
      data = null;
    }
    if (!res || !res.ok) {
      blk.error.textContent = (data && data.message) || "Not blocked: the server could not be reached.";
      return;
    }
    blk.dialog.close();
    const conv = convs.get(blk.convId);
    if (conv) conv.closing = true; // the block closes it: no "ended" toast on top
    toast(`Visitor blocked until ${toDate(data.block.expires_at).toLocaleString()}.`, "info");
  }

  if (blk.button && blk.dialog) {
    blk.button.addEventListener("click", openBlock);
    blk.form.addEventListener("submit", submitBlock);
    $("block-cancel").addEventListener("click", () => blk.dialog.close());
  }

  /* ------------------------------------------------------------------ canned responses */
  // Issue 12: typing "/" and a shortcut in the composer offers the canned responses admins keep;
  // Enter, Tab or a click puts the chosen one in the reply box (to edit or send), with
  // {customer_first_name} and {agent_name} filled in here, in the browser.

  const canned = { items: [], fetchedAt: 0, matches: [], active: 0, menu: $("canned-menu") };
  const CANNED_REFRESH_MS = 60000;

  async function fetchCanned() {
    canned.fetchedAt = Date.now();
    try {
      const res = await fetch("/api/agent/canned", { credentials: "same-origin", cache: "no-store" });
      if (!res.ok) return;
      const data = await res.json();
      canned.items = Array.isArray(data.canned) ? data.canned : [];
    } catch (_) {
      /* offline: keep what we have */
    }
  }

  function fillPlaceholders(body, conv) {
    const first = String(customerOf(conv && conv.item).name || "").trim().split(/\s+/)[0] || "";
    return body.replace(/\{(customer_first_name|agent_name)\}/g, (_, key) =>
      key === "agent_name" ? ME.displayName : first);
  }

  function cannedQuery() {
    const m = /^\/([A-Za-z0-9_-]*)$/.exec(ui.input.value);
    return m ? m[1].toLowerCase() : null;
  }

  function closeCanned() {
    canned.matches = [];
    canned.menu.hidden = true;
    canned.menu.textContent = "";
  }

  function renderCanned() {
    canned.menu.textContent = "";
    canned.matches.forEach((item, i) => {
      const li = el("li", "canned-option");
      li.id = `canned-option-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(i === canned.active));
      li.appendChild(el("span", "canned-shortcut", `/${item.shortcut}`));
      li.appendChild(el("span", "canned-preview", item.body));
      li.addEventListener("mousedown", (ev) => {
        ev.preventDefault(); // keep the focus in the reply box
        insertCanned(item);
      });
      canned.menu.appendChild(li);
    });
    canned.menu.hidden = canned.matches.length === 0;
  }

  function updateCanned() {
    const q = cannedQuery();
    if (q === null) return closeCanned();
    if (Date.now() - canned.fetchedAt > CANNED_REFRESH_MS) fetchCanned().then(updateCanned);
    canned.matches = canned.items.filter((c) => c.shortcut.startsWith(q)).slice(0, 8);
    canned.active = 0;
    renderCanned();
  }

  function insertCanned(item) {
    const conv = shownConvId && convs.get(shownConvId);
    ui.input.value = fillPlaceholders(item.body, conv);
    if (conv) conv.draft = ui.input.value;
    closeCanned();
    ui.input.focus();
    ui.input.setSelectionRange(ui.input.value.length, ui.input.value.length);
  }

  if (canned.menu) {
    // A textarea may not carry combobox states (axe: aria-allowed-attr); it names the list.
    ui.input.setAttribute("aria-controls", "canned-menu");
    ui.input.addEventListener("input", updateCanned);
    ui.input.addEventListener("blur", closeCanned);
    // Capture on the form: runs before the reply box's own Enter-to-send.
    ui.composer.addEventListener("keydown", (ev) => {
      if (canned.menu.hidden || !canned.matches.length) return;
      const n = canned.matches.length;
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        canned.active = (canned.active + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
        renderCanned();
      } else if ((ev.key === "Enter" && !ev.shiftKey) || ev.key === "Tab") {
        insertCanned(canned.matches[canned.active]);
      } else if (ev.key === "Escape") {
        closeCanned();
      } else {
        return;
      }
      ev.preventDefault();
      ev.stopImmediatePropagation();
    }, true);
    fetchCanned();
  }

  renderSidebar();
  renderPane();
  connect();
})();
