/* Admin console: conversation search, read-only transcripts with downloads, the audit log.
 *
 * Plain ES2020. State lives in the URL hash (#/conversations?q=..&status=..&offset=..,
 * #/conversations/<id>, #/audit?offset=..) so Back and reload work. All user-provided text is
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
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path) {
    const res = await fetch(path, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
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
      throw new HttpError(res.status, code, message);
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

  function showView(name) {
    ui.viewConv.hidden = name !== "conversations";
    ui.viewDetail.hidden = name !== "detail";
    ui.viewAudit.hidden = name !== "audit";
    const onAudit = name === "audit";
    ui.tabConv.classList.toggle("is-active", !onAudit);
    ui.tabAudit.classList.toggle("is-active", onAudit);
    if (onAudit) {
      ui.tabAudit.setAttribute("aria-current", "page");
      ui.tabConv.removeAttribute("aria-current");
    } else {
      ui.tabConv.setAttribute("aria-current", "page");
      ui.tabAudit.removeAttribute("aria-current");
    }
  }

  function route() {
    const { parts, params } = parseHash();
    if (parts[0] === "audit") {
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
