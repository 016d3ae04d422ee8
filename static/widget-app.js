/* The chat in the /widget iframe and at /chat: policy -> pre-chat form -> chat. Writes no
   cookie or storage; the server sets the session cookie only after consent. Tells the embed
   whether a conversation is open (chat:active) and how many replies are unread (chat:unread).
   User text goes in via textContent. */
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const root = $('chat');
  const inFrame = window.parent !== window;
  // shown=0: the embed reconnects on a new page, panel closed.
  const startHidden = inFrame && new URLSearchParams(location.search).get('shown') === '0';
  const toParent = (msg) => { if (inFrame) window.parent.postMessage(msg, '*'); };
  const LIMIT = 4000;
  const mk = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  };
  const say = (id, text) => { $(id).textContent = text || ''; };
  const on = (id, type, fn) => $(id).addEventListener(type, fn);
  const AWAY = "Can't reach the chat right now. Please try again.";
  const WRONG = 'Something went wrong. Please try again.';
  const OFFLINE = 'Not connected. Please try again in a moment.';
  const uuid = () => (crypto.randomUUID ? crypto.randomUUID()
    : '10000000-1000-4000-8000-100000000000'.replace(/[018]/g, (c) =>
      (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16)));

  // The embed's accent, text and link colours, chosen by the server for WCAG contrast
  // (web/widget.py); set through CSSOM, which the CSP allows.
  const st = document.documentElement.style;
  const d = root.dataset;
  if ([d.color, d.ink, d.link].every((c) => /^#[0-9a-f]{6}$/i.test(c || ''))) {
    st.setProperty('--accent', d.color);
    st.setProperty('--accent-fg', d.ink);
    st.setProperty('--link', d.link);
  }

  async function api(method, path, body) {
    const opts = { method, credentials: 'same-origin', cache: 'no-store', headers: {} };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    let data = {};
    try { data = (await r.json()) || {}; } catch (e) { /* not JSON */ }
    return { status: r.status, ok: r.ok, data };
  }

  // ---- screens
  const SCREENS = ['loading', 'policy', 'blocked', 'form', 'chat', 'done'];
  function show(name, focus) {
    for (const s of SCREENS) $('screen-' + s).hidden = s !== name;
    root.dataset.screen = name;
    $('chat-tools').hidden = name !== 'chat';
    if (name !== 'chat' && name !== 'loading') active(false);
    if (name !== 'chat') say('subtitle', "We're happy to help.");
    if (focus && parentOpen) focus.focus({ preventScroll: name === 'policy' });
  }
  // Whether a conversation is open, for the embed's marker: a boolean only.
  let activeSaid = null;
  function active(on) {
    if (activeSaid === on) return;
    activeSaid = on;
    toParent({ type: 'chat:active', open: on });
  }
  function unreachable(retry) {
    say('loading-msg', "Can't reach the chat right now.");
    $('retry').hidden = false;
    $('retry').onclick = () => { $('retry').hidden = true; say('loading-msg', 'Loading…'); retry(); };
    show('loading', $('retry'));
  }

  // /api/session answers 200 with or without a session: no failed request in the console
  // of the site that embeds us before consent.
  let me = null;
  async function route() {
    let r;
    try { r = await api('GET', '/api/session'); } catch (e) { return unreachable(route); }
    if (!r.ok) return unreachable(route);
    if (!r.data.session) { me = null; return showPolicy(); }
    me = r.data;
    if (me.policy_version && me.policy_version !== policy.version && !(await reloadPolicy())) {
      return unreachable(route);
    }
    if (!me.consent || !me.consent.current) {
      return showPolicy(me.consent ? 1 : (me.consents || []).length ? 2 : 0); // 1 outdated, 2 withdrawn
    }
    if (!me.customer) return showForm();
    openChat();
  }

  // ---- 1. policy and consent
  let policy = { version: root.dataset.policyVersion, sha256: root.dataset.policySha256 };
  // Links in the policy text open in a tab: most sites (ours too) refuse to show in this frame.
  const newTabs = () => $('policy-html').querySelectorAll('a[href]').forEach((a) => { a.target = '_blank'; a.rel = 'noopener'; });
  newTabs();
  async function reloadPolicy() {
    try {
      const r = await api('GET', '/api/policy');
      if (!r.ok) return false;
      policy = r.data;
      // Trusted HTML: the server renders the published policy; it is not visitor input.
      $('policy-html').innerHTML = policy.html;
      newTabs();
      say('policy-summary', policy.summary);
      return true;
    } catch (e) { return false; }
  }
  function showPolicy(why, note) {
    $('policy-changed').hidden = !why;
    say('policy-why', why === 2 ? 'You withdrew your consent.' : 'Our privacy policy changed.');
    say('policy-summary', why === 2 ? 'To chat again, please accept the privacy policy.' : policy.summary);
    $('decline').hidden = !me; // a session exists: offer to end the chat or delete the account
    declineReset();
    say('policy-version', policy.version);
    $('accept').checked = false;
    $('on-behalf').checked = false;
    $('start').disabled = true;
    say('policy-error', note);
    $('policy-html').scrollTop = 0;
    show('policy', $('policy-title'));
  }
  on('accept', 'change', () => { $('start').disabled = !$('accept').checked; });
  on('policy-form', 'submit', async (ev) => {
    ev.preventDefault();
    if (!$('accept').checked) return;
    const btn = $('start');
    btn.disabled = true;
    say('policy-error');
    try {
      const r = await api('POST', '/api/consent', {
        policy_version: policy.version, policy_sha256: policy.sha256,
        on_behalf: $('on-behalf').checked,
      });
      if (r.status === 409) {
        if (!(await reloadPolicy())) throw new Error('policy');
        return showPolicy(1, 'The privacy policy was just updated. Please read it and accept again.');
      }
      if (!r.ok) {
        btn.disabled = false;
        return say('policy-error', r.data.message || WRONG);
      }
      const m = await api('GET', '/api/session');
      if (!m.ok) throw new Error('me');
      if (!m.data.session) return show('blocked', $('blocked-title'));
      me = m.data;
      if (me.customer) openChat(); else showForm();
    } catch (e) {
      btn.disabled = !$('accept').checked;
      say('policy-error', AWAY);
    }
  });
  on('blocked-retry', 'click', route);

  // Declining a changed policy: end the chat, or delete the account at once.
  function eraseAsk(on) {
    $('erase-ask').hidden = $('erase-no').hidden = !on;
    $('stop').hidden = on;
    $('decline-opts').classList.toggle('ask', on);
    say('erase', on ? 'Yes, delete everything' : 'Delete my account');
    say('erase-error');
  }
  function declineReset() {
    $('decline-opts').hidden = true;
    $('dont').setAttribute('aria-expanded', 'false');
    eraseAsk(false);
  }
  on('dont', 'click', () => {
    const open = $('decline-opts').hidden;
    declineReset();
    $('decline-opts').hidden = !open;
    $('dont').setAttribute('aria-expanded', String(open));
    if (open) $('decline-opts').scrollIntoView({ block: 'nearest' });
  });
  function done(title, final) {
    say('done-title', title);
    $('done-text').hidden = $('done-back').hidden = final;
    show('done', $('done-title'));
  }
  on('stop', 'click', () => done('This chat has ended', false));
  on('done-back', 'click', route);
  on('erase-no', 'click', () => { eraseAsk(false); $('erase').focus(); });
  on('erase', 'click', async () => {
    if ($('erase-ask').hidden) return eraseAsk(true);
    const btn = $('erase');
    btn.disabled = true;
    if (ws) { ws.onclose = null; ws.close(1000); ws = null; } // its 4401 must not reopen the policy
    clearTimeout(retryTimer);
    try {
      const r = await api('DELETE', '/api/me');
      if (r.status === 401) return route();
      if (!r.ok) return say('erase-error', r.data.message || 'Something went wrong. Nothing was deleted.');
      outbox.clear(); clearList(); convId = null; me = null;
      done('Your account and data were deleted.', true);
    } catch (e) {
      say('erase-error', AWAY);
    } finally { btn.disabled = false; }
  });

  // ---- 2. pre-chat form
  const FIELDS = ['name', 'email', 'company'];
  const FIELD_MSG = {
    invalid_name: 'Please enter your name (up to 100 characters).',
    invalid_email: 'Please enter a valid email address.',
    invalid_company: 'Please use at most 200 characters.',
    cc_not_allowed: 'Please enter just one email address. Copies (CC) are not allowed.',
  };
  function fieldError(f, text) {
    say('e-' + f, text);
    const input = $('f-' + f);
    if (text) input.setAttribute('aria-invalid', 'true'); else input.removeAttribute('aria-invalid');
  }
  function showForm() {
    FIELDS.forEach((f) => fieldError(f, ''));
    say('form-error');
    const c = me && me.customer;
    if (c) FIELDS.forEach((f) => { $('f-' + f).value = c[f] || ''; });
    show('form', $('f-name'));
  }
  on('visitor-form', 'submit', async (ev) => {
    ev.preventDefault();
    const v = {};
    FIELDS.forEach((f) => { v[f] = $('f-' + f).value.trim(); fieldError(f, ''); });
    say('form-error');
    let bad = null;
    if (!v.name) { fieldError('name', 'Please enter your name.'); bad = bad || 'name'; }
    if (!v.email || !$('f-email').validity.valid) {
      fieldError('email', FIELD_MSG.invalid_email); bad = bad || 'email';
    }
    if (bad) return $('f-' + bad).focus();
    const btn = $('form-submit');
    btn.disabled = true;
    try {
      const r = await api('POST', '/api/visitor', v);
      if (r.ok) {
        me = Object.assign(me || {}, { customer: r.data.customer });
        return openChat();
      }
      if (r.status === 401 || r.status === 403) return route();
      const code = r.data.error;
      let f = code === 'cc_not_allowed' ? 'email' : r.data.field;
      if (r.status === 422 && FIELDS.includes(f)) {
        fieldError(f, FIELD_MSG[code] || r.data.message || 'Please check this field.');
        return $('f-' + f).focus();
      }
      say('form-error', r.data.message || WRONG);
    } catch (e) {
      say('form-error', AWAY);
    } finally {
      btn.disabled = false;
    }
  });

  // ---- 3. chat
  const list = $('messages');
  const scroller = $('scroller');
  const ta = $('text');
  const msgs = new Map(); // seq -> element; a seq is never shown twice
  const outbox = new Map(); // client_msg_id -> {body, el}; in memory until acked
  let ws = null, ready = false, retryTimer = 0, pingTimer = 0, backoff = 500;
  let convId = null, contig = 0, ended = false, agentsOnline = true, agent = null, status = null;
  let readSeq = 0; // the highest seq reported read: agent replies after it are unread

  // As on the dashboard: the time in the reader's locale, with the date when not today.
  const hhmm = (t) => {
    const d = t ? new Date(t) : new Date();
    if (isNaN(d)) return '';
    const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return d.toDateString() === new Date().toDateString() ? time
      : d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + time;
  };
  function render(m, pending) {
    const sender = m.sender === 'visitor' || m.sender === 'agent' ? m.sender : 'system';
    const el = mk('div', 'msg msg-' + sender + (pending ? ' pending' : ''));
    if (sender === 'system') {
      el.append(mk('span', 'sys', m.body), mk('span', 'meta', hhmm(m.sent_at)));
    } else {
      el.append(mk('div', 'bubble', m.body), mk('div', 'meta'));
      stamp(el, m, pending);
    }
    return el;
  }
  function stamp(el, m, pending) {
    const who = m.sender === 'visitor' ? 'You' : m.author || 'Support';
    el.classList.toggle('pending', !!pending);
    el.lastChild.textContent = pending ? 'Sending…' : who + ' · ' + hhmm(m.sent_at);
  }
  function place(el, seq) {
    el.dataset.seq = seq;
    msgs.set(seq, el);
    while (msgs.has(contig + 1)) contig++;
    let ref = list.lastElementChild; // pending bubbles (no seq) stay last
    while (ref && (!ref.dataset.seq || +ref.dataset.seq > seq)) ref = ref.previousElementSibling;
    list.insertBefore(el, ref ? ref.nextElementSibling : list.firstElementChild);
  }
  const nearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 60;
  const toBottom = () => { scroller.scrollTop = scroller.scrollHeight; };

  function onMessage(f) {
    if (!Number.isInteger(f.seq) || (f.conversation_id && f.conversation_id !== convId)) return;
    const p = f.sender === 'visitor' && f.client_msg_id ? outbox.get(f.client_msg_id) : null;
    if (p) outbox.delete(f.client_msg_id);
    if (msgs.has(f.seq)) {
      if (p && p.el !== msgs.get(f.seq)) p.el.remove();
      else if (f.sender === 'agent') stamp(msgs.get(f.seq), f);
      return;
    }
    const stick = nearBottom() || !!p;
    let el;
    if (p) { el = p.el; stamp(el, f); } else el = render(f);
    place(el, f.seq);
    if (f.sender === 'agent') typingOff();
    if (stick) toBottom();
    markRead();
  }
  function onAck(f) {
    const p = outbox.get(f.client_msg_id);
    if (!p) return;
    outbox.delete(f.client_msg_id);
    if (msgs.has(f.seq)) return p.el.remove();
    stamp(p.el, { sender: 'visitor' });
    place(p.el, f.seq);
  }
  function clearList() {
    msgs.clear();
    contig = 0;
    list.replaceChildren(...[...outbox.values()].map((p) => p.el));
    markRead();
  }

  // The banner: while queued, or with no agent online (one may leave mid-chat). Offline:
  // email is promised only where this server sends mail.
  function waitingText() {
    if (agentsOnline) return 'Waiting for an agent…';
    const email = me && me.customer && me.customer.email;
    if (me && me.mail_enabled && email) {
      return "No agent is online. Leave a message: we'll answer by email to " + email + '.';
    }
    return "No agent is online. Leave a message; we'll answer here when one is back.";
  }
  function setStatus(now, name) {
    status = now;
    if (name) agent = name;
    else if (status === 'queued') agent = null; // released to the queue: nobody has it now
    ended = status === 'closed';
    active(!ended);
    const b = $('banner');
    b.hidden = ended || (status !== 'queued' && agentsOnline);
    const text = waitingText();
    if (b.textContent !== text) b.textContent = text;
    say('subtitle', status === 'active' ? (agent ? 'You are chatting with ' + agent : 'An agent has joined')
      : status === 'closed' ? 'Conversation ended' : "We're happy to help.");
    $('ended').hidden = !ended;
    $('transcript').hidden = !(ended && me && me.mail_enabled);
    if (!ended) { say('transcript-msg'); $('transcript-send').disabled = false; }
    $('composer').hidden = ended;
    $('end').disabled = ended;
    if (ended) { typingOff(); setTyping(false); toBottom(); }
    showRating(ended);
  }

  const RECONNECTING = 'Reconnecting…';
  let toastTimer = 0;
  function toast(text, ms) {
    const t = $('toast');
    t.textContent = text;
    t.hidden = !text;
    clearTimeout(toastTimer);
    if (text && ms) toastTimer = setTimeout(() => { t.hidden = true; }, ms);
  }
  const ERRORS = {
    body_too_long: 'That message is too long (max 4000 characters).',
    rate_limited: 'You are sending messages too quickly. Retrying in a moment…', // then 4429
    conversation_closed: 'This conversation has ended; your message was not sent.',
  };
  let live = ''; // broadcast_unavailable's text: shown until broadcast_restored
  function liveBack() {
    if (live && $('toast').textContent === live) toast('');
    live = '';
  }
  function onError(f) {
    if (f.code === 'broadcast_unavailable') return toast(live = f.message);
    toast(ERRORS[f.code] || f.message || 'Something went wrong.', 5000);
    if (f.code === 'conversation_closed' || f.code === 'body_too_long') {
      for (const p of outbox.values()) {
        p.el.classList.replace('pending', 'failed');
        p.el.lastChild.textContent = 'Not sent';
      }
      outbox.clear();
    }
  }

  let typingTimer = 0;
  function typingOff() { $('typing').hidden = true; clearTimeout(typingTimer); }
  function onTyping(f) {
    if (f.sender === 'visitor') return;
    if (!f.state) return typingOff();
    say('typing', (f.author || agent || 'Support') + ' is typing…');
    $('typing').hidden = false;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(typingOff, 8000); // in case the "stopped" frame is lost
  }

  function transmit(frame) {
    if (!ws || ws.readyState !== 1 || !ready) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }
  function flush() {
    for (const [id, p] of outbox) transmit({ type: 'message', body: p.body, client_msg_id: id });
  }

  function connect() {
    clearTimeout(retryTimer);
    if (ws) { const old = ws; ws = null; old.onclose = null; old.close(1000); }
    const sock = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/visitor');
    let welcomed = false;
    ws = sock;
    ready = false;
    sock.onmessage = (ev) => {
      if (sock !== ws) return;
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (!f || typeof f !== 'object') return;
      switch (f.type) {
        case 'welcome': {
          welcomed = true;
          backoff = 500;
          if ($('toast').textContent === RECONNECTING) toast('');
          liveBack();
          if (f.conversation_id !== convId) {
            if (convId) clearList();
            convId = f.conversation_id;
            agent = null;
            readSeq = 0;
          }
          readSeq = Math.max(readSeq, Number.isInteger(f.read_seq) ? f.read_seq : 0);
          agentsOnline = f.agents_online !== false;
          const away = agent && f.agent && f.agent !== agent; // renamed meanwhile: relabel all
          setStatus(f.status, f.agent);
          ready = true;
          // The stored read mark first: replies delivered to a closed panel are still emailed
          // (docs/protocol.md#read).
          sock.send(JSON.stringify({ type: 'read', seq: readSeq }));
          sock.send(JSON.stringify({ type: 'resume', after_seq: away ? 0 : contig }));
          flush();
          if (root.dataset.screen === 'chat' && !ended) toBottom();
          break;
        }
        case 'message': onMessage(f); break;
        case 'ack': onAck(f); break;
        case 'status': // renamed: a replay relabels the agent's earlier replies
          if (f.conversation_id && f.conversation_id !== convId) break;
          setStatus(f.status, f.agent);
          if (f.renamed) transmit({ type: 'resume', after_seq: 0 });
          break;
        case 'typing': onTyping(f); break;
        case 'rating': onRated(f); break;
        case 'presence':
          agentsOnline = f.agents_online !== false;
          if (status) setStatus(status);
          break;
        case 'error': if (!ratingError(f)) onError(f); break;
        case 'broadcast_restored': liveBack(); break;
      }
    };
    sock.onclose = async (ev) => {
      if (sock !== ws) return;
      ws = null;
      ready = false;
      typingOn = false;
      typingOff();
      if (ev.code === 4423) return blockedNotice();
      if (ev.code === 4401) { outbox.clear(); clearList(); convId = null; active(false); } // session ended or erased
      if (ev.code === 4401 || ev.code === 4403) return route();
      if (ev.code === 1008) return toast('This website may not use our chat.');
      if (ended) return; // reconnecting now would open a new conversation; wait for the button
      if (!welcomed) {
        // A refused handshake looks like 1006: is consent or the cookie gone?
        try {
          const r = await api('GET', '/api/session');
          if (r.ok && (!r.data.session || !r.data.consent || !r.data.consent.current || !r.data.customer)) {
            return route();
          }
        } catch (e) { /* offline: keep retrying */ }
      }
      if (ev.code === 4429) backoff = Math.max(backoff, 5000); // let the rate bucket refill
      else toast(RECONNECTING);
      const delay = backoff * (0.7 + Math.random() * 0.6);
      backoff = Math.min(backoff * 2, 15000);
      retryTimer = setTimeout(connect, delay);
    };
  }

  let connectWhenShown = false;
  function openChat() {
    show('chat', ta);
    clearInterval(pingTimer);
    pingTimer = setInterval(() => transmit({ type: 'ping' }), 25000);
    // Behind a closed panel, only to an open conversation: a socket would start a new one.
    if (!parentOpen && me && me.open_conversation === false) {
      connectWhenShown = true;
      active(false);
      return;
    }
    if (!ws) connect();
  }

  function send() {
    const body = ta.value.trim();
    if (!body || ended) return;
    if (body.length > LIMIT) return toast(ERRORS.body_too_long, 5000);
    const id = uuid();
    const el = render({ sender: 'visitor', body }, true);
    list.append(el);
    outbox.set(id, { body, el });
    transmit({ type: 'message', body, client_msg_id: id });
    ta.value = '';
    input();
    setTyping(false);
    toBottom();
  }

  let typingOn = false, typingAt = 0, idleTimer = 0;
  function setTyping(state) {
    clearTimeout(idleTimer);
    if (!state && !typingOn) return;
    if (transmit({ type: 'typing', state })) { typingOn = state; typingAt = Date.now(); }
  }
  function input() {
    const n = ta.value.length;
    const c = $('count');
    c.textContent = n > LIMIT - 500 ? n + ' / ' + LIMIT : '';
    c.classList.toggle('over', n >= LIMIT);
    ta.style.height = 'auto';
    ta.style.height = Math.min(ta.scrollHeight, 120) + 'px';
  }
  ta.addEventListener('input', () => {
    input();
    if (!ta.value.trim()) return setTyping(false);
    if (!typingOn || Date.now() - typingAt >= 2000) setTyping(true);
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => setTyping(false), 3000);
  });
  ta.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); send(); }
  });
  on('composer', 'submit', (ev) => { ev.preventDefault(); send(); ta.focus(); });

  let confirmTimer = 0;
  on('end', 'click', () => {
    const b = $('end');
    if (!b.classList.contains('confirm')) {
      b.classList.add('confirm');
      b.textContent = 'Click again to end';
      confirmTimer = setTimeout(() => { b.classList.remove('confirm'); b.textContent = 'End chat'; }, 4000);
      return;
    }
    clearTimeout(confirmTimer);
    b.classList.remove('confirm');
    b.textContent = 'End chat';
    if (!transmit({ type: 'close' })) toast(OFFLINE, 4000);
  });
  // Blocked by an agent: a plain notice, no reason, no retry.
  function blockedNotice() {
    outbox.clear();
    done('Chat is not available', true);
  }

  // ---- satisfaction rating: asked once a conversation has ended
  let rated = null;  // the conversation this page rated
  const RATE_ERR = { invalid_score: 'Please choose from 1 to 5 stars.',
    already_rated: 'This conversation has already been rated.', not_closed: 'You can rate it once it has ended.' };
  function rateLock(on) { $('rate-box').disabled = on; $('rate-send').hidden = on && rated === convId; }
  function showRating(on) {
    const f = $('rate');
    if (on && convId && f.hidden && rated !== convId) { f.reset(); rateLock(false); say('rate-msg'); }
    f.hidden = !(on && convId);
  }
  function onRated(f) {
    if (f.conversation_id !== convId) return;
    rated = convId;
    rateLock(true);
    say('rate-msg', 'Thank you for your rating (' + f.score + ' of 5).');
  }
  function ratingError(f) {
    if (!RATE_ERR[f.code] && ($('rate').hidden || f.code !== 'invalid_field')) return false;
    say('rate-msg', RATE_ERR[f.code] || f.message);
    rateLock(false);
    return true;
  }
  on('rate', 'submit', (ev) => {
    ev.preventDefault();
    const p = $('rate').querySelector(':checked');
    if (!p) return say('rate-msg', RATE_ERR.invalid_score);
    if (!transmit({ type: 'rating', score: +p.value, comment: $('rate-comment').value.trim() })) {
      return say('rate-msg', OFFLINE);
    }
    rateLock(true);
  });

  on('new-chat', 'click', () => {
    ended = false;
    $('ended').hidden = true;
    $('composer').hidden = false;
    connect();
    ta.focus();
  });
  on('transcript-send', 'click', async () => {
    const b = $('transcript-send');
    b.disabled = true;
    say('transcript-msg', 'Sending…');
    try {
      const r = await api('POST', '/api/me/transcript-email', { conversation_id: convId });
      say('transcript-msg', r.data.message || (r.ok ? 'The transcript is on its way.' : WRONG));
      b.disabled = r.ok; // sent: once is enough
    } catch (e) { say('transcript-msg', AWAY); b.disabled = false; }
  });
  window.addEventListener('online', () => { if (!ws && convId && !ended) { backoff = 500; connect(); } });

  // ---- unread count, read marks and the embedding page
  // Replies after the read mark are unread (badge, title); marks go out only for what is on
  // screen: chat showing, panel open, tab visible.
  let unread = 0, parentOpen = !startHidden, modal = false;
  const baseTitle = document.title;
  const seen = () => !document.hidden && parentOpen && root.dataset.screen === 'chat';
  function countUnread() {
    let n = 0;
    for (const [seq, el] of msgs) if (seq > readSeq && el.classList.contains('msg-agent')) n++;
    if (n === unread) return;
    unread = n;
    toParent({ type: 'chat:unread', count: unread });
    document.title = (unread ? '(' + unread + ') ' : '') + baseTitle;
  }
  // Coalesced: a replay wants one mark.
  let readTimer = 0;
  function markRead() {
    clearTimeout(readTimer);
    readTimer = setTimeout(() => {
      if (seen() && contig > readSeq && transmit({ type: 'read', seq: contig })) readSeq = contig;
      countUnread();
    }, 150);
  }
  window.addEventListener('focus', markRead);
  document.addEventListener('visibilitychange', markRead);
  window.addEventListener('message', (ev) => {
    // Whether the embed's panel is open: a boolean, from our parent only.
    if (ev.source !== window.parent || !ev.data || ev.data.type !== 'chat:visible') return;
    const was = parentOpen;
    parentOpen = !!ev.data.open;
    modal = !!ev.data.modal;
    if (!parentOpen) return;
    if (connectWhenShown) { connectWhenShown = false; if (!ws) connect(); }
    // Laid out while hidden, the list stayed at its top: show the newest.
    if (root.dataset.screen === 'chat') { ta.focus(); if (!was) toBottom(); }
    markRead();
  });
  // Full screen (a phone, a zoomed window), the chat is modal: Tab cycles inside.
  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Tab' || !modal) return;
    const all = [...root.querySelectorAll('a[href],button,input,textarea,[tabindex="0"]')]
      .filter((e) => !e.disabled && e.getClientRects().length);
    const first = all[0], last = all[all.length - 1], at = document.activeElement;
    if (!first) return;
    if (ev.shiftKey ? at === first || !root.contains(at) : at === last) {
      ev.preventDefault();
      (ev.shiftKey ? last : first).focus();
    }
  });
  const minimise = () => toParent({ type: 'chat:close' });
  $('minimise').hidden = !inFrame;
  on('minimise', 'click', minimise);
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && inFrame) minimise(); });

  route();
})();
