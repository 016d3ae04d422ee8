/* Admin console: conversation search, read-only transcripts with downloads, customers (legal
 * hold, erasure), privacy-policy versions, retention purges and the audit log.
 *
 * Plain ES2020. State lives in the URL hash (#/conversations?q=..&status=..&offset=..,
 * #/conversations/<id>, #/customers?q=..&offset=.., #/policies, #/retention, #/audit?offset=..)
 * so Back and reload work. All user-provided text is
 * inserted with textContent, never innerHTML.
 */
(() => {
  "use strict";

  const root = document.getElementById("admin");
  if (!root) return;

  const PAGE = 50;
  const FORMATS = [
    ["txt", "Text"],
    ["json", "JSON"],
    ["html", "HTML"],
    ["csv", "CSV"],
  ];
  const $ = (id) => document.getElementById(id);
  const ui = {
    tabConv: $("tab-conversations"),
    tabAudit: $("tab-audit"),
    viewConv: $("view-conversations"),
    viewDetail: $("view-detail"),
    viewAudit: $("view-audit"),
    form: $("conv-search"),
    q: $("search-q"),
    status: $("search-status"),
    rows: $("conv-rows"),
    prev: $("conv-prev"),
    next: $("conv-next"),
    range: $("conv-range"),
    back: $("detail-back"),
    dName: $("detail-name"),
    dContact: $("detail-contact"),
    dStatus: $("detail-status"),
    dFacts: $("detail-facts"),
    dDownloads: $("detail-downloads"),
    dMessages: $("detail-messages"),
    dError: $("detail-error"),
    auditRows: $("audit-rows"),
    auditPrev: $("audit-prev"),
    auditNext: $("audit-next"),
    auditRange: $("audit-range"),
  };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function toDate(value) {
    if (value === null || value === undefined || value === "") return null;
    const d = typeof value === "number" ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function when(value) {
    const d = toDate(value);
    return d
      ? d.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })
      : "—";
  }

  function whenFull(value) {
    const d = toDate(value);
    return d ? d.toLocaleString() : "";
  }

  class HttpError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;
    }
  }

  async function api(path, method, body) {
    const opts = {
      method: method || "GET",
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    if (res.status === 401) {
      window.location.reload(); // signed out: the page becomes the sign-in form
      throw new HttpError(401, "not_signed_in", "Signed out.");
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    if (!res.ok) {
      const code = (data && data.error) || `http_${res.status}`;
      const message =
        res.status === 403
          ? "Only admins can see this."
          : (data && data.message) || `The server answered ${res.status}.`;
      throw new HttpError(res.status, code, message, data && data.field);
    }
    return data;
  }

  function messageRow(tbody, text, cls, cols) {
    tbody.textContent = "";
    const tr = el("tr", "table-message");
    const td = el("td", cls || "", text);
    td.colSpan = cols;
    tr.appendChild(td);
    tbody.appendChild(tr);
  }

  function statusTag(status) {
    const s = ["queued", "active", "closed"].includes(status) ? status : "other";
    return el("span", `status-tag status-${s}`, status || "unknown");
  }

  /* ------------------------------------------------------------------ routing */

  function parseHash() {
    const raw = window.location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    const params = new URLSearchParams(query || "");
    const parts = (path || "conversations").split("/").filter(Boolean);
    return { parts: parts.length ? parts : ["conversations"], params };
  }

  function go(hash) {
    if (window.location.hash === hash) route();
    else window.location.hash = hash;
  }

  let lastListHash = "#/conversations";
  let seq = 0; // drops answers to requests that a newer one replaced

  const VIEWS = ["conversations", "detail", "customers", "policies", "retention", "audit"];
  const TABS = ["conversations", "customers", "policies", "retention", "audit"];

  function showView(name) {
    for (const v of VIEWS) $(`view-${v}`).hidden = v !== name;
    const active = name === "detail" ? "conversations" : name;
    for (const t of TABS) {
      const tab = $(`tab-${t}`);
      tab.classList.toggle("is-active", t === active);
      if (t === active) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
  }

  function route() {
    const { parts, params } = parseHash();
    const offsetParam = () => Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
    if (parts[0] === "customers") {
      showView("customers");
      document.title = "Customers · Admin console";
      loadCustomers(params.get("q") || "", offsetParam());
    } else if (parts[0] === "policies") {
      showView("policies");
      document.title = "Privacy policy · Admin console";
      loadPolicies();
    } else if (parts[0] === "retention") {
      showView("retention");
      document.title = "Retention · Admin console";
      resetPurge();
    } else if (parts[0] === "audit") {
      showView("audit");
      document.title = "Audit log · Admin console";
      loadAudit(Math.max(0, parseInt(params.get("offset") || "0", 10) || 0));
    } else if (parts[0] === "conversations" && parts[1]) {
      showView("detail");
      document.title = "Transcript · Admin console";
      loadDetail(decodeURIComponent(parts.slice(1).join("/")));
    } else {
      showView("conversations");
      document.title = "Conversations · Admin console";
      const q = params.get("q") || "";
      const status = params.get("status") || "";
      const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
      lastListHash = window.location.hash || "#/conversations";
      ui.back.href = lastListHash;
      loadConversations(q, status, offset);
    }
  }

  function listHash(q, status, offset) {
    const p = new URLSearchParams();
    if (q) p.set("q", q);
    if (status) p.set("status", status);
    if (offset) p.set("offset", String(offset));
    const s = p.toString();
    return `#/conversations${s ? `?${s}` : ""}`;
  }

  /* ------------------------------------------------------------------ conversations */

  let listState = { q: "", status: "", offset: 0, total: 0 };

  async function loadConversations(q, status, offset) {
    ui.q.value = q;
    ui.status.value = status;
    listState = { q, status, offset, total: listState.total };
    const mine = ++seq;
    const p = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    if (q) p.set("q", q);
    if (status) p.set("status", status);
    messageRow(ui.rows, "Loading…", "muted", 5);
    ui.prev.disabled = true;
    ui.next.disabled = true;
    let data;
    try {
      data = await api(`/api/admin/conversations?${p}`);
    } catch (err) {
      if (mine === seq) messageRow(ui.rows, err.message, "form-error", 5);
      ui.range.textContent = "";
      return;
    }
    if (mine !== seq) return;
    const list = (data && data.conversations) || [];
    const total = Number(data && data.total) || 0;
    listState.total = total;
    ui.rows.textContent = "";
    if (!list.length) {
      messageRow(ui.rows, q || status ? "No conversations match." : "No conversations yet.", "muted", 5);
    }
    for (const c of list) ui.rows.appendChild(conversationRow(c));
    ui.range.textContent = list.length
      ? `${offset + 1}–${offset + list.length} of ${total}`
      : total
        ? `Nothing on this page (${total} in all)`
        : "";
    ui.prev.disabled = offset <= 0;
    ui.next.disabled = offset + list.length >= total;
  }

  function conversationRow(c) {
    const id = String(c.id);
    const tr = el("tr", "clickable");
    tr.dataset.id = id;
    const created = el("td", "nowrap", when(c.created_at));
    created.title = whenFull(c.created_at);

    const cust = c.customer || {};
    const who = el("td", "who");
    const link = el("a", "row-link", cust.name || "(erased or unknown)");
    link.href = `#/conversations/${encodeURIComponent(id)}`;
    who.appendChild(link);
    const sub = [cust.email, cust.company].filter(Boolean).join(" · ");
    if (sub) who.appendChild(el("div", "sub", sub));

    const st = el("td");
    st.appendChild(statusTag(c.status));
    const agent = el("td", "", c.agent_name || "—");
    const count = el("td", "num", c.message_count ?? "—");
    tr.append(created, who, st, agent, count);
    return tr;
  }

  ui.rows.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) return; // the link handles itself
    const tr = ev.target.closest("tr[data-id]");
    if (!tr) return;
    if (window.getSelection && String(window.getSelection())) return; // selecting text
    go(`#/conversations/${encodeURIComponent(tr.dataset.id)}`);
  });

  ui.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(listHash(ui.q.value.trim(), ui.status.value, 0));
  });

  ui.status.addEventListener("change", () => {
    go(listHash(ui.q.value.trim(), ui.status.value, 0));
  });

  ui.prev.addEventListener("click", () => {
    go(listHash(listState.q, listState.status, Math.max(0, listState.offset - PAGE)));
  });

  ui.next.addEventListener("click", () => {
    go(listHash(listState.q, listState.status, listState.offset + PAGE));
  });

  /* ------------------------------------------------------------------ transcript */

  function renderMessage(m) {
    const sender = m.sender === "visitor" || m.sender === "agent" ? m.sender : "system";
    const li = el("li", `msg msg-${sender}`);
    if (sender === "system") {
      li.appendChild(el("span", "msg-system-text", m.body));
      li.appendChild(el("span", "msg-system-time", when(m.sent_at)));
      return li;
    }
    li.appendChild(el("div", "bubble", m.body));
    const meta = el("div", "msg-meta", [m.author || sender, when(m.sent_at)].join(" · "));
    meta.title = `#${m.seq} · ${whenFull(m.sent_at)}`;
    li.appendChild(meta);
    return li;
  }

  function fact(dl, label, value) {
    dl.appendChild(el("dt", "", label));
    dl.appendChild(el("dd", "", value));
  }

  async function loadDetail(id) {
    const mine = ++seq;
    ui.dName.textContent = "Loading…";
    ui.dContact.textContent = "";
    ui.dStatus.textContent = "";
    ui.dStatus.className = "status-tag";
    ui.dFacts.textContent = "";
    ui.dDownloads.textContent = "";
    ui.dMessages.textContent = "";
    ui.dError.hidden = true;
    let data;
    try {
      data = await api(`/api/admin/conversations/${encodeURIComponent(id)}`);
    } catch (err) {
      if (mine !== seq) return;
      ui.dName.textContent = err.status === 404 ? "Conversation not found" : "Could not load";
      ui.dError.textContent = err.status === 404 ? "It may have been erased." : err.message;
      ui.dError.hidden = false;
      return;
    }
    if (mine !== seq) return;
    const c = data.conversation || {};
    const cust = c.customer || {};
    ui.dName.textContent = cust.name || "(erased or unknown)";
    for (const v of [cust.email, cust.company]) if (v) ui.dContact.appendChild(el("span", "", v));
    const tag = statusTag(c.status);
    ui.dStatus.className = tag.className;
    ui.dStatus.textContent = tag.textContent;

    fact(ui.dFacts, "Conversation", c.id);
    fact(ui.dFacts, "Created", whenFull(c.created_at) || "—");
    if (c.claimed_at) fact(ui.dFacts, "Claimed", whenFull(c.claimed_at));
    if (c.closed_at) fact(ui.dFacts, "Closed", whenFull(c.closed_at));
    fact(ui.dFacts, "Agent", c.agent_name || "—");
    fact(ui.dFacts, "Consent", c.policy_version ? `Policy v${c.policy_version}` : "None on record");
    const messages = Array.isArray(data.messages) ? data.messages : [];
    fact(ui.dFacts, "Messages", String(c.message_count ?? messages.length));

    for (const [fmt, label] of FORMATS) {
      const a = el("a", "download-link", label);
      a.href = `/api/admin/conversations/${encodeURIComponent(String(c.id || id))}/transcript?format=${fmt}`;
      a.setAttribute("download", "");
      a.title = `Download as ${label} (recorded in the audit log)`;
      ui.dDownloads.appendChild(a);
    }

    if (!messages.length) {
      ui.dMessages.appendChild(el("li", "msg msg-system", "No messages."));
    }
    messages.sort((a, b) => a.seq - b.seq);
    for (const m of messages) ui.dMessages.appendChild(renderMessage(m));
  }

  /* ------------------------------------------------------------------ shared bits */

  const COUNT_LABELS = {
    accounts: "Accounts",
    customers: "Customers",
    closed_conversations: "Closed conversations",
    conversations: "Conversations",
    messages: "Messages",
    consents: "Consents",
    sessions: "Sessions",
    access_events: "Access records",
  };

  function countLabel(key) {
    if (COUNT_LABELS[key]) return COUNT_LABELS[key];
    const s = String(key).replace(/_/g, " ");
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  function countList(counts, cls) {
    const dl = el("dl", cls || "counts");
    for (const [k, v] of Object.entries(counts || {})) {
      const item = el("div", "count-item");
      item.append(el("dt", "", countLabel(k)), el("dd", "", typeof v === "object" ? JSON.stringify(v) : v));
      dl.appendChild(item);
    }
    if (!dl.children.length) dl.appendChild(el("div", "muted", "Nothing."));
    return dl;
  }

  function notice(box, kind, title, extra) {
    box.textContent = "";
    box.className = `notice notice-${kind}`;
    box.appendChild(el("strong", "", title));
    if (extra) box.appendChild(extra);
    box.hidden = false;
  }

  /* ------------------------------------------------------------------ customers */

  const cust = {
    form: $("cust-search"),
    q: $("cust-q"),
    rows: $("cust-rows"),
    prev: $("cust-prev"),
    next: $("cust-next"),
    range: $("cust-range"),
    notice: $("cust-notice"),
  };
  let custState = { q: "", offset: 0, total: 0 };
  const CUST_COLS = 7;

  function custHash(q, offset) {
    const p = new URLSearchParams();
    if (q) p.set("q", q);
    if (offset) p.set("offset", String(offset));
    const s = p.toString();
    return `#/customers${s ? `?${s}` : ""}`;
  }

  async function loadCustomers(q, offset, keepNotice) {
    cust.q.value = q;
    custState = { q, offset, total: custState.total };
    if (!keepNotice) cust.notice.hidden = true;
    const mine = ++seq;
    const p = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    if (q) p.set("q", q);
    if (!cust.rows.children.length || !keepNotice) messageRow(cust.rows, "Loading…", "muted", CUST_COLS);
    cust.prev.disabled = true;
    cust.next.disabled = true;
    let data;
    try {
      data = await api(`/api/admin/customers?${p}`);
    } catch (err) {
      if (mine === seq) messageRow(cust.rows, err.message, "form-error", CUST_COLS);
      cust.range.textContent = "";
      return;
    }
    if (mine !== seq) return;
    const list = (data && data.customers) || [];
    const total = Number(data && data.total) || 0;
    custState.total = total;
    cust.rows.textContent = "";
    if (!list.length) messageRow(cust.rows, q ? "No customers match." : "No customers yet.", "muted", CUST_COLS);
    for (const c of list) cust.rows.appendChild(customerRow(c));
    cust.range.textContent = list.length
      ? `${offset + 1}–${offset + list.length} of ${total}`
      : total
        ? `Nothing on this page (${total} in all)`
        : "";
    cust.prev.disabled = offset <= 0;
    cust.next.disabled = offset + list.length >= total;
  }

  function holdButton(c) {
    const b = el("button", "hold-toggle");
    b.type = "button";
    b.dataset.action = "hold";
    b.setAttribute("aria-pressed", c.legal_hold ? "true" : "false");
    b.setAttribute("aria-label", `Legal hold for ${c.name || c.email || "this customer"}`);
    b.appendChild(el("span", "switch"));
    b.appendChild(el("span", "hold-label", c.legal_hold ? "On hold" : "Off"));
    b.title = c.legal_hold ? "On legal hold: kept by purges and cannot be erased. Click to release."
      : "Click to place on legal hold: purges and erasure then skip this customer.";
    return b;
  }

  function customerRow(c) {
    const tr = el("tr", c.legal_hold ? "on-hold" : "");
    tr.dataset.id = String(c.id);
    tr._customer = c;
    const name = el("td", "who");
    name.appendChild(el("span", "cust-name", c.name || "(no name)"));
    const created = toDate(c.created_at);
    if (created) name.appendChild(el("div", "sub", `since ${when(c.created_at)}`));
    const email = el("td", "mono", c.email || "—");
    const company = el("td", "", c.company || "—");
    const last = el("td", "nowrap", when(c.last_active_at));
    last.title = whenFull(c.last_active_at);
    const convs = el("td", "num", c.conversations ?? "—");
    const hold = el("td");
    hold.appendChild(holdButton(c));
    const actions = el("td", "row-actions");
    const erase = el("button", "danger-outline", "Erase");
    erase.type = "button";
    erase.dataset.action = "erase";
    erase.setAttribute("aria-label", `Erase ${c.name || c.email || "this customer"}`);
    actions.appendChild(erase);
    tr.append(name, email, company, last, convs, hold, actions);
    return tr;
  }

  async function toggleHold(tr, button) {
    const c = tr._customer;
    const want = !c.legal_hold;
    button.disabled = true;
    try {
      const data = await api(`/api/admin/customers/${encodeURIComponent(c.id)}/legal-hold`, "POST", { hold: want });
      const updated = (data && data.customer) || { ...c, legal_hold: want };
      const fresh = customerRow(updated);
      const confirmRow = tr.nextElementSibling && tr.nextElementSibling.classList.contains("confirm-row")
        ? tr.nextElementSibling : null;
      tr.replaceWith(fresh);
      if (confirmRow) confirmRow.remove();
      fresh.querySelector(".hold-toggle").focus();
      notice(cust.notice, "ok", updated.legal_hold
        ? "Legal hold placed: purges keep this customer and erasure is refused until the hold is released."
        : "Legal hold released.");
    } catch (err) {
      button.disabled = false;
      notice(cust.notice, "error", err.message);
    }
  }

  function closeConfirm() {
    const open = cust.rows.querySelector(".confirm-row");
    if (open) open.remove();
  }

  function openErase(tr) {
    const c = tr._customer;
    const existing = tr.nextElementSibling;
    closeConfirm();
    if (existing && existing.classList.contains("confirm-row")) return; // second click closes it
    const expected = (c.email || String(c.id)).trim();
    const row = el("tr", "confirm-row");
    const td = el("td");
    td.colSpan = CUST_COLS;
    const box = el("form", "erase-box");
    box.noValidate = true;
    const title = el("p", "erase-title");
    title.appendChild(el("strong", "", `Erase ${c.name || "this customer"}?`));
    box.appendChild(title);
    box.appendChild(el("p", "", "This deletes at once their name, email, company, consents, sessions, "
      + "access records and every message of their conversations, agents' replies included. It cannot be undone; "
      + "open chats of this customer end."));
    if (c.legal_hold) box.appendChild(el("p", "warn-text", "This customer is on legal hold: release the hold first."));
    const id = `erase-input-${c.id}`;
    const label = el("label", "", c.email ? "Type the customer's email to confirm: " : "Type the customer's id to confirm: ");
    label.htmlFor = id;
    label.appendChild(el("code", "", expected));
    const input = el("input");
    input.type = "text";
    input.id = id;
    input.autocomplete = "off";
    input.spellcheck = false;
    const err = el("p", "form-error");
    err.setAttribute("role", "alert");
    const actions = el("div", "form-actions");
    const goBtn = el("button", "danger", "Erase for good");
    goBtn.type = "submit";
    goBtn.disabled = true;
    const cancel = el("button", "secondary", "Cancel");
    cancel.type = "button";
    actions.append(goBtn, cancel);
    box.append(label, input, err, actions);
    td.appendChild(box);
    row.appendChild(td);
    tr.after(row);
    input.focus();

    const matches = () => input.value.trim().toLowerCase() === expected.toLowerCase();
    input.addEventListener("input", () => {
      goBtn.disabled = !matches();
      err.textContent = "";
    });
    cancel.addEventListener("click", () => {
      row.remove();
      const b = tr.querySelector("[data-action=erase]");
      if (b) b.focus();
    });
    box.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!matches()) return;
      goBtn.disabled = true;
      cancel.disabled = true;
      err.textContent = "";
      let data;
      try {
        data = await api(`/api/admin/customers/${encodeURIComponent(c.id)}`, "DELETE");
      } catch (e) {
        goBtn.disabled = false;
        cancel.disabled = false;
        err.textContent = e.code === "legal_hold"
          ? "This customer is on legal hold, so nothing was erased. Release the hold first."
          : e.message;
        return;
      }
      row.remove();
      // No PII in the notice: the customer is gone.
      const extra = el("div");
      extra.appendChild(el("p", "muted", `Erasure ${data && data.erasure_id ? data.erasure_id : ""} is recorded in the audit log. Deleted:`));
      extra.appendChild(countList(data && data.counts));
      notice(cust.notice, "ok", "Customer erased.", extra);
      cust.notice.focus();
      loadCustomers(custState.q, custState.offset, true);
    });
  }

  cust.rows.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (!b) return;
    const tr = b.closest("tr");
    if (!tr || !tr._customer) return;
    if (b.dataset.action === "hold") toggleHold(tr, b);
    else if (b.dataset.action === "erase") openErase(tr);
  });

  cust.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(custHash(cust.q.value.trim(), 0));
  });
  cust.prev.addEventListener("click", () => go(custHash(custState.q, Math.max(0, custState.offset - PAGE))));
  cust.next.addEventListener("click", () => go(custHash(custState.q, custState.offset + PAGE)));

  /* ------------------------------------------------------------------ privacy policy */

  const pol = {
    rows: $("policy-rows"),
    form: $("policy-form"),
    submit: $("p-submit"),
    msg: $("p-msg"),
  };
  const POLICY_FIELDS = ["version", "effective_date", "summary", "text"];

  function today() {
    const d = new Date();
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  }

  function policyFieldError(f, text) {
    const input = $(`p-${f}`);
    $(`pe-${f}`).textContent = text || "";
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  function nextVersion(v) {
    const m = /^(.*?)(\d+)$/.exec(v || "");
    if (!m) return "";
    const n = String(Number(m[2]) + 1).padStart(m[2].length, "0");
    return m[1] + n;
  }

  async function loadPolicies() {
    const mine = ++seq;
    messageRow(pol.rows, "Loading…", "muted", 5);
    if (!$("p-effective_date").value) $("p-effective_date").value = today();
    let data;
    try {
      data = await api("/api/admin/policies");
    } catch (err) {
      if (mine === seq) messageRow(pol.rows, err.message, "form-error", 5);
      return;
    }
    if (mine !== seq) return;
    const list = (data && data.policies) || [];
    pol.rows.textContent = "";
    if (!list.length) messageRow(pol.rows, "No policy published yet.", "muted", 5);
    list.forEach((p, i) => {
      const tr = el("tr");
      const v = el("td", "nowrap");
      const a = el("a", "row-link", p.version);
      a.href = `/policy/${encodeURIComponent(p.version)}`;
      a.target = "_blank";
      a.rel = "noopener";
      v.appendChild(a);
      if (i === 0) v.appendChild(el("span", "current-tag", "current"));
      const sha = el("td", "mono", p.sha256 ? `${String(p.sha256).slice(0, 12)}…` : "—");
      if (p.sha256) sha.title = p.sha256;
      const pub = el("td", "nowrap", when(p.published_at));
      pub.title = whenFull(p.published_at);
      tr.append(v, el("td", "nowrap", p.effective_date || "—"), el("td", "summary", p.summary || "—"), sha, pub);
      pol.rows.appendChild(tr);
    });
    const vInput = $("p-version");
    if (list.length && !vInput.value) vInput.placeholder = `e.g. ${nextVersion(list[0].version) || "1.02"}`;
  }

  pol.form.addEventListener("input", (ev) => {
    const f = ev.target && ev.target.name;
    if (POLICY_FIELDS.includes(f)) policyFieldError(f, "");
    pol.msg.textContent = "";
  });

  pol.form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    let first = null;
    for (const f of POLICY_FIELDS) {
      const v = $(`p-${f}`).value;
      body[f] = f === "text" ? v : v.trim();
      policyFieldError(f, "");
      if (!body[f].trim()) {
        policyFieldError(f, "Required.");
        first = first || f;
      }
    }
    if (!first && !/^\d{4}-\d{2}-\d{2}$/.test(body.effective_date)) {
      policyFieldError("effective_date", "Use a date like 2025-01-31.");
      first = "effective_date";
    }
    pol.msg.textContent = "";
    pol.msg.className = "form-msg";
    if (first) return $(`p-${first}`).focus();
    pol.submit.disabled = true;
    try {
      const data = await api("/api/admin/policies", "POST", body);
      const v = (data && data.policy && data.policy.version) || body.version;
      pol.form.reset();
      $("p-effective_date").value = today();
      pol.msg.className = "form-msg ok";
      pol.msg.textContent = `Published version ${v}. It is now the current policy.`;
      loadPolicies();
    } catch (err) {
      const f = err.code === "version_exists" ? "version" : err.field;
      if (POLICY_FIELDS.includes(f)) {
        policyFieldError(f, err.code === "version_exists" ? `Version ${body.version} already exists.` : err.message);
        $(`p-${f}`).focus();
      } else {
        pol.msg.className = "form-msg form-error";
        pol.msg.textContent = err.message;
      }
    } finally {
      pol.submit.disabled = false;
    }
  });

  /* ------------------------------------------------------------------ retention */

  const purge = {
    preview: $("purge-preview"),
    now: $("purge-now"),
    confirm: $("purge-confirm"),
    ask: $("purge-ask"),
    yes: $("purge-yes"),
    no: $("purge-no"),
    error: $("purge-error"),
    result: $("purge-result"),
    title: $("purge-title"),
    counts: $("purge-counts"),
  };

  function resetPurge() {
    purge.confirm.hidden = true;
    purge.error.textContent = "";
  }

  function showPurge(title, counts) {
    purge.title.textContent = title;
    const fresh = countList(counts, "facts purge-counts");
    fresh.id = "purge-counts";
    purge.counts.replaceWith(fresh);
    purge.counts = fresh;
    purge.result.hidden = false;
  }

  function describe(counts) {
    const parts = Object.entries(counts || {}).map(([k, v]) => `${v} ${countLabel(k).toLowerCase()}`);
    return parts.length ? parts.join(", ") : "nothing";
  }

  async function runPurge(dryRun) {
    purge.error.textContent = "";
    const data = await api("/api/admin/purge", "POST", { dry_run: dryRun });
    return (data && data.counts) || {};
  }

  function busy(on) {
    for (const b of [purge.preview, purge.now, purge.yes, purge.no]) b.disabled = on;
  }

  purge.preview.addEventListener("click", async () => {
    purge.confirm.hidden = true;
    busy(true);
    try {
      const counts = await runPurge(true);
      showPurge(`Preview, ${new Date().toLocaleTimeString()}: a purge now would erase`, counts);
    } catch (err) {
      purge.error.textContent = err.message;
    } finally {
      busy(false);
    }
  });

  purge.now.addEventListener("click", async () => {
    busy(true);
    try {
      const counts = await runPurge(true); // say what will go before asking
      purge.ask.textContent = `This erases ${describe(counts)} now, as if each customer had deleted their account. `
        + "It cannot be undone.";
      purge.confirm.hidden = false;
      purge.no.disabled = false;
      purge.yes.disabled = false;
      purge.yes.focus();
    } catch (err) {
      purge.error.textContent = err.message;
    } finally {
      purge.preview.disabled = false;
      purge.now.disabled = false;
    }
  });

  purge.no.addEventListener("click", () => {
    purge.confirm.hidden = true;
    purge.now.focus();
  });

  purge.yes.addEventListener("click", async () => {
    busy(true);
    try {
      const counts = await runPurge(false);
      purge.confirm.hidden = true;
      showPurge(`Purged, ${new Date().toLocaleTimeString()}: erased`, counts);
      purge.now.focus();
    } catch (err) {
      purge.error.textContent = err.message;
    } finally {
      busy(false);
    }
  });

  /* ------------------------------------------------------------------ audit */

  let auditOffset = 0;

  async function loadAudit(offset) {
    auditOffset = offset;
    const mine = ++seq;
    messageRow(ui.auditRows, "Loading…", "muted", 7);
    ui.auditPrev.disabled = true;
    ui.auditNext.disabled = true;
    let data;
    try {
      data = await api(`/api/admin/audit?limit=${PAGE}&offset=${offset}`);
    } catch (err) {
      if (mine === seq) messageRow(ui.auditRows, err.message, "form-error", 7);
      ui.auditRange.textContent = "";
      return;
    }
    if (mine !== seq) return;
    const entries = (data && data.entries) || [];
    ui.auditRows.textContent = "";
    if (!entries.length) messageRow(ui.auditRows, "No entries.", "muted", 7);
    for (const e of entries) {
      const tr = el("tr");
      const t = el("td", "nowrap", when(e.at));
      t.title = whenFull(e.at);
      const detail = el("td", "detail");
      if (e.detail !== null && e.detail !== undefined && !(typeof e.detail === "object" && !Object.keys(e.detail).length)) {
        detail.appendChild(el("code", "", typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail)));
      } else {
        detail.textContent = "—";
      }
      const action = el("td");
      action.appendChild(el("span", "action-tag", e.action));
      const hash = el("td", "num", e.id);
      if (e.hash) hash.title = `hash ${e.hash}`;
      tr.append(hash, t, el("td", "mono", e.actor || "—"), action, el("td", "mono nowrap", e.ip || "—"),
        el("td", "mono", e.target || "—"), detail);
      ui.auditRows.appendChild(tr);
    }
    ui.auditRange.textContent = entries.length ? `Entries ${offset + 1}–${offset + entries.length}, newest first` : "";
    ui.auditPrev.disabled = offset <= 0;
    ui.auditNext.disabled = entries.length < PAGE;
  }

  ui.auditPrev.addEventListener("click", () => {
    const o = Math.max(0, auditOffset - PAGE);
    go(o ? `#/audit?offset=${o}` : "#/audit");
  });
  ui.auditNext.addEventListener("click", () => go(`#/audit?offset=${auditOffset + PAGE}`));

  ui.tabConv.addEventListener("click", (ev) => {
    // Coming back to the list keeps the last search.
    ev.preventDefault();
    go(lastListHash);
  });

  window.addEventListener("hashchange", route);
  route();
})();
