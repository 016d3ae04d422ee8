/* The customer's account page (/account): details, consent history, export, deletion.
   Same-origin fetches with the HttpOnly chat_session cookie. User text goes in via textContent. */
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const mk = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  };
  const say = (id, text) => { $(id).textContent = text || ''; };
  const FIELDS = ['name', 'email', 'company'];
  const FIELD_MSG = {
    invalid_name: 'Please enter your name (up to 100 characters).',
    invalid_email: 'Please enter a valid email address.',
    invalid_company: 'Please use at most 200 characters.',
    cc_not_allowed: 'Please enter just one email address. Copies (CC) are not allowed.',
  };
  const METHOD = { widget: 'In the chat', account: 'On this page', email_link: 'By email link' };
  const OFFLINE = "Can't reach the server. Please try again.";

  async function api(method, path, body) {
    const opts = { method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    let data = {};
    try { data = (await r.json()) || {}; } catch (e) { /* not JSON */ }
    return { status: r.status, ok: r.ok, data };
  }

  // Public pages (policy, cookies) refuse to be framed: inside the widget's frame a plain link
  // would show "refused to connect", so they open in a tab of their own.
  function newTab(a) {
    a.target = '_blank';
    a.rel = 'noopener';
    a.append(mk('span', 'sr-only', ' (opens in a new tab)'));
  }

  function when(v) {
    const d = v ? new Date(v) : null;
    if (!d || isNaN(d)) return null;
    const t = mk('time', '', d.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' }));
    t.dateTime = d.toISOString();
    t.title = d.toString();
    return t;
  }

  // Exactly one of: loading, none (no session), fail, main.
  function state(name, text) {
    for (const s of ['loading', 'none', 'fail', 'main']) {
      const el = $('acct-' + s);
      if (el) el.hidden = s !== name;
    }
    if ($('acct-mail')) $('acct-mail').hidden = name !== 'none'; // asking for a link by mail
    if (name === 'fail') say('acct-fail', text);
  }
  let loaded = false;
  function noSession() {
    state('none');
    if (!loaded) return;
    // The session ended while the page was open (erased or signed out elsewhere): drop what we showed.
    me = null;
    FIELDS.forEach((f) => { $('f-' + f).value = ''; });
    $('consent-rows').textContent = '';
    $('acct-title').focus();
  }

  let me = null;
  let policy = null;

  async function load() {
    let r;
    try { r = await api('GET', '/api/me'); } catch (e) { return state('fail', OFFLINE); }
    if (r.status === 401) return noSession();
    if (!r.ok) return state('fail', r.data.message || 'Something went wrong. Please reload the page.');
    me = r.data;
    renderDetails();
    renderConversations();
    await renderConsent();
    $('hold-note').hidden = !me.legal_hold;
    state('main');
    loaded = true;
  }

  // ---- details ------------------------------------------------------------------------
  function fieldError(f, text) {
    say('e-' + f, text);
    const input = $('f-' + f);
    if (text) input.setAttribute('aria-invalid', 'true'); else input.removeAttribute('aria-invalid');
  }
  function notice(id, text, kind) {
    const el = $(id);
    el.textContent = text || '';
    el.classList.toggle('ok', kind === 'ok');
    el.classList.toggle('error', kind === 'error');
  }
  function renderDetails() {
    const c = me.customer;
    $('details-none').hidden = !!c;
    $('details-form').hidden = !c;
    // The export is of an account; a session that never gave its details has none (404 no_customer).
    $('export').hidden = !c;
    $('export-none').hidden = !!c;
    if (c) FIELDS.forEach((f) => { $('f-' + f).value = c[f] || ''; fieldError(f, ''); });
  }
  $('details-form').addEventListener('input', () => notice('details-msg', ''));
  $('details-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = {};
    FIELDS.forEach((f) => { v[f] = $('f-' + f).value.trim(); fieldError(f, ''); });
    notice('details-msg', '');
    let bad = null;
    if (!v.name) { fieldError('name', 'Please enter your name.'); bad = bad || 'name'; }
    if (!v.email || !$('f-email').validity.valid) { fieldError('email', FIELD_MSG.invalid_email); bad = bad || 'email'; }
    if (bad) return $('f-' + bad).focus();
    const btn = $('details-save');
    btn.disabled = true;
    try {
      const r = await api('PATCH', '/api/me', v);
      if (r.ok) {
        me.customer = r.data.customer || v;
        renderDetails();
        return notice('details-msg', 'Saved. Your details are up to date.', 'ok');
      }
      if (r.status === 401) return noSession();
      if (r.status === 404) { me.customer = null; return renderDetails(); }
      const code = r.data.error;
      const f = code === 'cc_not_allowed' ? 'email' : r.data.field;
      if (FIELDS.includes(f)) {
        fieldError(f, FIELD_MSG[code] || r.data.message || 'Please check this field.');
        return $('f-' + f).focus();
      }
      notice('details-msg', r.data.message || 'Something went wrong. Please try again.', 'error');
    } catch (e) {
      notice('details-msg', OFFLINE, 'error');
    } finally {
      btn.disabled = false;
    }
  });

  // ---- consent ------------------------------------------------------------------------
  function renderHistory() {
    const rows = $('consent-rows');
    rows.textContent = '';
    const list = Array.isArray(me.consents) ? me.consents : [];
    if (!list.length) {
      const tr = mk('tr', 'empty');
      const td = mk('td', 'muted', 'No consent on record.');
      td.colSpan = 5;
      tr.append(td);
      rows.append(tr);
    }
    for (const c of list) {
      const tr = mk('tr', c.withdrawn_at ? 'withdrawn' : '');
      const ver = mk('td');
      const a = mk('a', '', 'Version ' + c.policy_version);
      a.href = '/policy/' + encodeURIComponent(c.policy_version);
      newTab(a);
      ver.append(a);
      if (c.policy_sha256) ver.title = 'SHA-256 of the text you saw: ' + c.policy_sha256;
      const given = mk('td');
      given.append(when(c.given_at) || '—');
      const wd = mk('td');
      wd.append(c.withdrawn_at ? when(c.withdrawn_at) || 'Yes' : 'No');
      const cells = [ver, given, mk('td', '', METHOD[c.method] || c.method || '—'),
        mk('td', '', c.on_behalf ? 'Yes' : 'No'), wd];
      // Labels for the stacked layout on narrow screens (CSS shows them via attr()).
      ['Policy', 'Given', 'How', 'On behalf of your customers', 'Withdrawn'].forEach((l, i) => { cells[i].dataset.label = l; });
      tr.append(...cells);
      rows.append(tr);
    }
  }

  async function loadPolicy() {
    try {
      const r = await api('GET', '/api/policy');
      if (!r.ok) return false;
      policy = r.data;
      return true;
    } catch (e) { return false; }
  }

  async function renderConsent() {
    renderHistory();
    const c = me.consent;
    const current = !!(c && c.current);
    const state = $('consent-state');
    if (current) {
      state.textContent = 'You consented to the current privacy policy (version ' + c.policy_version + ').';
    } else if (c) {
      state.textContent = 'You consented to version ' + c.policy_version + ', but the privacy policy has changed since (now version '
        + me.policy_version + '). The chat is paused until you accept the new version.';
    } else if (me.consents && me.consents.length) {
      state.textContent = 'You withdrew your consent. The chat is paused until you consent again.';
    } else {
      state.textContent = 'You have not consented to the privacy policy.';
    }
    $('withdraw-box').hidden = !current;
    $('give-box').hidden = true;
    if (current) return;
    if (!policy || policy.version !== me.policy_version) await loadPolicy();
    if (!policy) return say('consent-msg', "Couldn't load the privacy policy. Please reload the page.");
    for (const el of document.querySelectorAll('#give-box .pv')) el.textContent = policy.version;
    say('give-summary', policy.summary ? 'Changes in this version: ' + policy.summary : '');
    $('give-link').href = '/policy/' + encodeURIComponent(policy.version);
    $('give-accept').checked = false;
    $('give-behalf').checked = false;
    $('give').disabled = true;
    say('give-error', '');
    $('give-box').hidden = false;
  }

  $('give-accept').addEventListener('change', () => { $('give').disabled = !$('give-accept').checked; });

  $('withdraw').addEventListener('click', async () => {
    const btn = $('withdraw');
    btn.disabled = true;
    notice('consent-msg', '');
    try {
      const r = await api('POST', '/api/consent/withdraw', {});
      if (r.status === 401) return noSession();
      if (!r.ok) return notice('consent-msg', r.data.message || 'Something went wrong. Please try again.', 'error');
      await reloadMe();
      notice('consent-msg', 'Your consent was withdrawn. The chat has ended; you can consent again at any time.', 'ok');
      $('consent-msg').focus(); // the button just went away
    } catch (e) {
      notice('consent-msg', OFFLINE, 'error');
    } finally {
      btn.disabled = false;
    }
  });

  $('give-box').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!$('give-accept').checked || !policy) return;
    const btn = $('give');
    btn.disabled = true;
    say('give-error', '');
    notice('consent-msg', '');
    try {
      const r = await api('POST', '/api/consent', {
        policy_version: policy.version, policy_sha256: policy.sha256,
        on_behalf: $('give-behalf').checked, method: 'account',
      });
      if (r.status === 409) {
        policy = null;
        await reloadMe();
        return say('give-error', 'The privacy policy was just updated. Please read the new version and accept again.');
      }
      if (r.status === 401) return noSession();
      if (!r.ok) {
        btn.disabled = false;
        return say('give-error', r.data.message || 'Something went wrong. Please try again.');
      }
      await reloadMe();
      notice('consent-msg', 'Thank you. Your consent to version ' + r.data.policy_version + ' is recorded; you can chat again.', 'ok');
      $('consent-msg').focus();
    } catch (e) {
      btn.disabled = !$('give-accept').checked;
      say('give-error', OFFLINE);
    }
  });

  async function reloadMe() {
    const r = await api('GET', '/api/me');
    if (r.status === 401) return noSession();
    if (!r.ok) throw new Error('me');
    me = r.data;
    $('hold-note').hidden = !me.legal_hold;
    await renderConsent();
  }

  // ---- mail: links without a session, transcripts with one ------------------------------
  // The answer to a link request is the same whether or not the address has an account, so the
  // page says only what the server said; a malformed address is refused here and by the server.
  const MAIL_ERR = {
    invalid_email: 'Please enter a valid email address, like name@example.com.',
    cc_not_allowed: 'Please enter just one email address.',
    mail_disabled: 'This server sends no email. Please open this page in the browser you chatted from.',
  };
  function mailForm(prefix, path) {
    const form = $(prefix + '-form');
    if (!form) return;
    const input = $(prefix + '-email');
    const fail = (text) => {
      say(prefix + '-error', text);
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    };
    input.addEventListener('input', () => { say(prefix + '-error', ''); input.removeAttribute('aria-invalid'); });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const email = input.value.trim();
      say(prefix + '-error', '');
      input.removeAttribute('aria-invalid');
      notice(prefix + '-msg', '');
      if (!email) return fail('Please enter your email address.');
      if (!input.validity.valid || email.includes(',') || email.includes(';')) return fail(MAIL_ERR.invalid_email);
      const btn = $(prefix + '-send');
      btn.disabled = true;
      try {
        const r = await api('POST', path, { email });
        if (r.status === 202) return notice(prefix + '-msg', r.data.message || 'If an account uses this address, a link is on its way to it.', 'ok');
        if (r.status === 422) return fail(MAIL_ERR[r.data.error] || r.data.message || 'Please check the address.');
        notice(prefix + '-msg', MAIL_ERR[r.data.error] || r.data.message || 'Something went wrong. Please try again.', 'error');
      } catch (e) {
        notice(prefix + '-msg', OFFLINE, 'error');
      } finally {
        btn.disabled = false;
      }
    });
  }
  mailForm('signin', '/api/account/link');
  mailForm('terminate', '/api/account/terminate-link');

  const STATUS = { queued: 'Waiting for an agent', active: 'Open', closed: 'Closed' };
  function renderConversations() {
    const box = $('transcripts');
    if (!box) return;
    const list = (me.mail_enabled && me.customer && Array.isArray(me.conversations)) ? me.conversations : [];
    box.hidden = !list.length;
    const ul = $('transcript-list');
    ul.textContent = '';
    for (const c of list) {
      const li = mk('li');
      const what = mk('span', 'conv');
      what.append('Started ', when(c.created_at) || '—', ' · ' + (STATUS[c.status] || c.status));
      const btn = mk('button', 'secondary', 'Email me a transcript');
      btn.type = 'button';
      const started = when(c.created_at);
      btn.setAttribute('aria-label', 'Email me a transcript of the conversation started '
        + (started ? started.textContent : ''));
      btn.addEventListener('click', () => sendTranscript(c.id, btn));
      li.append(what, btn);
      ul.append(li);
    }
  }
  async function sendTranscript(id, btn) {
    btn.disabled = true;
    notice('transcript-msg', '');
    try {
      const r = await api('POST', '/api/me/transcript-email', { conversation_id: id });
      if (r.status === 401) return noSession();
      if (r.ok) return notice('transcript-msg', r.data.message || 'The transcript is on its way to the address on your account.', 'ok');
      notice('transcript-msg', r.data.message || 'Something went wrong. Please try again.', 'error');
    } catch (e) {
      notice('transcript-msg', OFFLINE, 'error');
    } finally {
      btn.disabled = false;
    }
  }

  // ---- export -------------------------------------------------------------------------
  // Fetched by this page and saved from memory rather than followed as a download link: inside
  // the widget on another site the session cookie is partitioned to this frame, and browsers
  // send it with the frame's own requests but not with a download it hands to the browser.
  $('export').addEventListener('click', async () => {
    const btn = $('export');
    btn.disabled = true;
    say('export-msg', '');
    say('export-error', '');
    try {
      const r = await fetch('/api/me/export', { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
      if (r.status === 401) return noSession();
      if (!r.ok) {
        let data = {};
        try { data = (await r.json()) || {}; } catch (e) { /* not JSON */ }
        if (r.status === 404) { me.customer = null; renderDetails(); }
        return say('export-error', data.message || 'Something went wrong. Please try again.');
      }
      const named = /filename="([^"]+)"/.exec(r.headers.get('Content-Disposition') || '');
      const name = named ? named[1] : 'my-chat-data.json';
      const url = URL.createObjectURL(await r.blob());
      const a = mk('a');
      a.href = url;
      a.download = name;
      a.hidden = true;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000); // the download may still be reading it
      say('export-msg', 'Your data is saved as ' + name + ' in your downloads.');
    } catch (e) {
      say('export-error', OFFLINE);
    } finally {
      btn.disabled = false;
    }
  });

  // ---- deletion -----------------------------------------------------------------------
  const confirmBox = $('delete-confirm');
  confirmBox.addEventListener('input', () => {
    $('delete').disabled = confirmBox.value.trim() !== 'DELETE';
    say('delete-error', '');
  });
  $('delete-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (confirmBox.value.trim() !== 'DELETE') {
      say('delete-error', 'Type DELETE in capitals to confirm.');
      return confirmBox.focus();
    }
    const btn = $('delete');
    btn.disabled = true;
    say('delete-error', '');
    try {
      const r = await api('DELETE', '/api/me');
      if (r.ok) {
        me = null;
        // Nothing else stays on the page: no name, no email, no history, no links.
        const h = $('acct-title');
        h.textContent = 'Your account and data were deleted.';
        h.classList.add('done');
        for (const el of [...$('account').children]) if (el !== h) el.remove();
        document.title = 'Account deleted';
        return h.focus();
      }
      if (r.status === 401) return noSession();
      btn.disabled = false;
      if (r.status === 409 && r.data.error === 'legal_hold') $('hold-note').hidden = false;
      say('delete-error', r.data.message
        || (r.data.error === 'legal_hold' ? 'Your account is on legal hold and cannot be deleted right now.'
          : 'Something went wrong. Nothing was deleted; please try again.'));
    } catch (e) {
      btn.disabled = false;
      say('delete-error', OFFLINE);
    }
  });

  load();
})();
