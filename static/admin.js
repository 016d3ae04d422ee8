/* Admin console: conversation search and bulk export, read-only transcripts with downloads,
 * customers (access records, legal hold, erasure), staff accounts, privacy-policy versions,
 * retention purges and the audit log (filters, chain verification).
 *
 * Plain ES2020. State lives in the URL hash
 * (#/conversations?status=..&agent=..&from=..&to=..&offset=..,
 * #/conversations/<id>, #/customers?offset=.., #/staff, #/policies, #/retention,
 * #/audit?actor=..&action=..&target=..&since=..&before=..&offset=..) so Back and reload work.
 * Search words and emails are personal data: they never enter a URL (browsers keep URLs in their
 * history, and the searches go to the server in POST bodies, which proxies do not log). They
 * live in this page's memory only, so a reload forgets them.
 * All user-provided text is inserted with textContent, never innerHTML.
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
    email: $("search-email"),
    agent: $("search-agent"),
    from: $("search-from"),
    to: $("search-to"),
    clear: $("search-clear"),
    searchError: $("search-error"),
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

  /** A table cell with the date and the time of day, each kept on one line: a narrow table
   * breaks between them, not inside either. */
  function whenCell(value) {
    const td = el("td", "when");
    const d = toDate(value);
    if (!d) {
      td.textContent = "—";
      return td;
    }
    td.title = whenFull(value);
    td.append(el("span", "", d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" })), " ",
      el("span", "", d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    return td;
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

  const VIEWS = ["conversations", "detail", "customers", "staff", "policies", "retention", "audit",
    "mail", "canned", "reports"];
  const TABS = ["conversations", "customers", "staff", "policies", "retention", "audit", "mail",
    "canned", "reports"];

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
    if (dropPrivate(params)) return; // route() runs again on the cleaned hash
    if (parts[0] === "customers") {
      showView("customers");
      document.title = "Customers · Admin console";
      loadCustomers(privateSearch.customers, offsetParam());
    } else if (parts[0] === "staff") {
      showView("staff");
      document.title = "Staff · Admin console";
      st.msg.textContent = "";
      loadStaff();
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
      loadAudit(readFilters(params, AUDIT_FILTERS), offsetParam());
    } else if (parts[0] === "mail") {
      showView("mail");
      document.title = "Mail · Admin console";
      loadMail(offsetParam());
    } else if (parts[0] === "reports") {
      showView("reports");
      document.title = "Reports · Admin console";
      loadReport(params.get("from") || "", params.get("to") || "");
    } else if (parts[0] === "canned") {
      showView("canned");
      document.title = "Canned responses · Admin console";
      loadCanned();
    } else if (parts[0] === "conversations" && parts[1]) {
      showView("detail");
      document.title = "Transcript · Admin console";
      loadDetail(decodeURIComponent(parts.slice(1).join("/")));
    } else {
      showView("conversations");
      document.title = "Conversations · Admin console";
      lastListHash = window.location.hash || "#/conversations";
      ui.back.href = lastListHash;
      loadConversations({ ...readFilters(params, HASH_FILTERS), ...privateSearch.conversations },
        offsetParam());
      loadAgentOptions();
    }
  }

  const CONV_FILTERS = ["q", "status", "email", "agent", "from", "to"];
  const PRIVATE_FILTERS = ["q", "email"];
  const HASH_FILTERS = CONV_FILTERS.filter((k) => !PRIVATE_FILTERS.includes(k));
  // The words of the current searches: in memory, never in the URL.
  const privateSearch = { conversations: { q: "", email: "" }, customers: "" };

  /* A URL from before searches left the hash (a bookmark, the history) may still carry q or
   * email: take them into memory and rewrite the hash without them, in place. */
  function dropPrivate(params) {
    const found = PRIVATE_FILTERS.filter((k) => params.has(k));
    if (!found.length) return false;
    const { parts } = parseHash();
    if (parts[0] === "customers") privateSearch.customers = (params.get("q") || "").trim();
    else for (const k of found) privateSearch.conversations[k] = (params.get(k) || "").trim();
    for (const k of found) params.delete(k);
    const rest = params.toString();
    history.replaceState(history.state, "", `#/${parts.join("/")}${rest ? `?${rest}` : ""}`);
    route();
    return true;
  }
  const AUDIT_FILTERS = ["actor", "action", "target", "since", "before"];
  const DATE_RE = /^\d{4}-\d{2}-\d{2}$/;

  function readFilters(params, names) {
    const f = {};
    for (const k of names) f[k] = (params.get(k) || "").trim();
    return f;
  }

  function filterHash(base, names, filters, offset) {
    const p = new URLSearchParams();
    for (const k of names) if (filters[k]) p.set(k, filters[k]);
    if (offset) p.set("offset", String(offset));
    const s = p.toString();
    return `${base}${s ? `?${s}` : ""}`;
  }

  function listHash(filters, offset) {
    return filterHash("#/conversations", HASH_FILTERS, filters, offset);
  }

  function goList(filters, offset) {
    privateSearch.conversations = { q: filters.q || "", email: filters.email || "" };
    go(listHash(filters, offset));
  }

  /* ------------------------------------------------------------------ conversations */

  let listState = { filters: readFilters(new URLSearchParams(), CONV_FILTERS), offset: 0, total: 0 };
  const FILTER_FIELDS = ["status", "email", "agent", "from", "to"];

  function formFilters() {
    return {
      q: ui.q.value.trim(),
      status: ui.status.value,
      email: ui.email.value.trim(),
      agent: ui.agent.value,
      from: ui.from.value,
      to: ui.to.value,
    };
  }

  function setFilterError(field, text) {
    const input = ui[field];
    const box = FILTER_FIELDS.includes(field) ? $(`fe-${field}`) : ui.searchError;
    box.textContent = text || "";
    if (input && FILTER_FIELDS.includes(field)) {
      if (text) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
  }

  function clearFilterErrors() {
    for (const f of FILTER_FIELDS) setFilterError(f, "");
    ui.searchError.textContent = "";
  }

  function anyFilter(f) {
    return CONV_FILTERS.some((k) => f[k]);
  }

  async function loadConversations(filters, offset) {
    ui.q.value = filters.q;
    ui.status.value = filters.status;
    ui.email.value = filters.email;
    selectAgent(filters.agent);
    ui.from.value = DATE_RE.test(filters.from) ? filters.from : "";
    ui.to.value = DATE_RE.test(filters.to) ? filters.to : "";
    listState = { filters, offset, total: listState.total };
    clearFilterErrors();
    const mine = ++seq;
    ui.prev.disabled = true;
    ui.next.disabled = true;
    if (filters.from && filters.to && DATE_RE.test(filters.from) && DATE_RE.test(filters.to)
        && filters.from > filters.to) {
      setFilterError("to", "Pick a day on or after the “from” day.");
      messageRow(ui.rows, "No day is both on or after “from” and on or before “to”.", "muted", 5);
      ui.range.textContent = "";
      return;
    }
    const body = { limit: PAGE, offset };
    for (const k of CONV_FILTERS) if (filters[k]) body[k] = filters[k];
    if (body.agent) body.agent = Number(body.agent);
    messageRow(ui.rows, "Loading…", "muted", 5);
    let data;
    try {
      data = await api("/api/admin/search/conversations", "POST", body);
    } catch (err) {
      if (mine !== seq) return;
      if (err.status === 422) {
        setFilterError(FILTER_FIELDS.includes(err.field) ? err.field : "", err.message);
        messageRow(ui.rows, "Correct the filter above to search.", "muted", 5);
      } else {
        messageRow(ui.rows, err.message, "form-error", 5);
      }
      ui.range.textContent = "";
      return;
    }
    if (mine !== seq) return;
    const list = (data && data.conversations) || [];
    const total = Number(data && data.total) || 0;
    listState.total = total;
    ui.rows.textContent = "";
    if (!list.length) {
      messageRow(ui.rows, anyFilter(filters) ? "No conversations match." : "No conversations yet.", "muted", 5);
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

  /* The agent filter lists every staff member (admins can take chats too, and disabled
   * accounts keep the conversations they handled). */
  let staffCache = null;
  let staffLoading = null;

  function staffLabel(s) {
    const bits = [];
    if (s.role === "admin") bits.push("admin");
    if (s.state === "disabled") bits.push("disabled");
    return bits.length ? `${s.name} (${bits.join(", ")})` : s.name;
  }

  function selectAgent(value) {
    const want = value || "";
    if (want && ![...ui.agent.options].some((o) => o.value === want)) {
      // Not (yet) in the list: keep the URL's value visible rather than dropping it.
      const o = el("option", "unknown-agent", staffCache ? `Staff #${want} (unknown)` : `Staff #${want}`);
      o.value = want;
      ui.agent.appendChild(o);
    }
    ui.agent.value = want;
  }

  function fillAgentSelect() {
    const want = listState.filters.agent || "";
    ui.agent.textContent = "";
    const any = el("option", "", "Any agent");
    any.value = "";
    ui.agent.appendChild(any);
    const list = [...(staffCache || [])].sort((a, b) => String(a.name).localeCompare(String(b.name)));
    for (const s of list) {
      const o = el("option", "", staffLabel(s));
      o.value = String(s.id);
      ui.agent.appendChild(o);
    }
    selectAgent(want);
  }

  async function loadAgentOptions(force) {
    if (staffCache && !force) return;
    if (staffLoading) return staffLoading;
    staffLoading = (async () => {
      try {
        const data = await api("/api/admin/staff");
        staffCache = (data && data.staff) || [];
        fillAgentSelect();
      } catch (err) {
        if (!$("fe-agent").textContent) $("fe-agent").textContent = `Agents could not be listed: ${err.message}`;
      } finally {
        staffLoading = null;
      }
    })();
    return staffLoading;
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
    goList(formFilters(), 0);
  });

  // Choosing from a list applies at once; typed fields and dates wait for Search (or Enter).
  for (const select of [ui.status, ui.agent]) {
    select.addEventListener("change", () => goList(formFilters(), 0));
  }

  for (const f of FILTER_FIELDS) {
    ui[f].addEventListener("input", () => setFilterError(f, ""));
  }

  ui.clear.addEventListener("click", () => {
    privateSearch.conversations = { q: "", email: "" };
    go("#/conversations");
    ui.q.focus();
  });

  ui.prev.addEventListener("click", () => {
    goList(listState.filters, Math.max(0, listState.offset - PAGE));
  });

  ui.next.addEventListener("click", () => {
    goList(listState.filters, listState.offset + PAGE);
  });

  /* ------------------------------------------------------------------ bulk export */

  const exp = {
    from: $("export-from"),
    to: $("export-to"),
    link: $("export-link"),
    summary: $("export-summary"),
    error: $("export-error"),
  };

  function exportFormat() {
    const checked = document.querySelector("input[name=export-format]:checked");
    return checked ? checked.value : "jsonl";
  }

  function updateExport() {
    const from = exp.from.value;
    const to = exp.to.value;
    const fmt = exportFormat();
    const p = new URLSearchParams();
    if (from) p.set("from", from);
    if (to) p.set("to", to);
    p.set("format", fmt);
    exp.error.textContent = "";
    if (from && to && from > to) {
      exp.error.textContent = "“From” is after “To”: pick a range that holds at least one day.";
      exp.link.removeAttribute("href");
      exp.link.setAttribute("aria-disabled", "true");
      exp.summary.textContent = "";
      return;
    }
    exp.link.href = `/api/admin/export?${p}`;
    exp.link.removeAttribute("aria-disabled");
    const range = from && to
      ? (from === to ? `sent on ${from}` : `sent from ${from} to ${to}`)
      : from ? `sent on or after ${from}` : to ? `sent on or before ${to}` : "held, of every date";
    exp.summary.textContent = `messages.${fmt}: every message ${range}.`;
  }

  for (const input of [exp.from, exp.to]) {
    input.addEventListener("input", updateExport);
    input.addEventListener("change", updateExport);
  }
  for (const radio of document.querySelectorAll("input[name=export-format]")) {
    radio.addEventListener("change", updateExport);
  }
  exp.link.addEventListener("click", (ev) => {
    if (!exp.link.hasAttribute("href")) {
      ev.preventDefault();
      exp.to.focus();
    }
  });
  updateExport();

  /* ------------------------------------------------------------------ transcript */

  function renderMessage(m) {
    const sender = m.sender === "visitor" || m.sender === "agent" ? m.sender : "system";
    const li = el("li", `msg msg-${sender}`);
    li.dataset.seq = String(m.seq);
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
    addNotesAndRating(data);
  }

  // Issue 12: staff notes, marked as such, after the message each follows; then the rating.
  function addNotesAndRating(data) {
    const notes = Array.isArray(data.notes) ? data.notes : [];
    for (const n of notes) {
      const li = el("li", "msg msg-note");
      li.appendChild(el("div", "note-label", "Note · only staff see this"));
      li.appendChild(el("div", "bubble", n.body));
      li.appendChild(el("div", "msg-meta", [n.author, when(n.sent_at)].join(" · ")));
      const after = [...ui.dMessages.children].filter((x) => Number(x.dataset.seq) <= Number(n.seq)).pop();
      li.dataset.seq = String(n.seq);
      if (after) after.after(li);
      else ui.dMessages.prepend(li);
    }
    const r = data.rating;
    if (r && Number.isInteger(r.score)) {
      const li = el("li", "msg msg-rating");
      li.appendChild(el("span", "rating-stars", "★".repeat(r.score) + "☆".repeat(5 - r.score)));
      li.appendChild(el("span", "rating-text", `Rated ${r.score} of 5 by the customer`));
      if (r.comment) li.appendChild(el("div", "rating-comment", r.comment));
      ui.dMessages.appendChild(li);
      fact(ui.dFacts, "Rating", `${r.score} of 5`);
    }
  }

  /* ------------------------------------------------------------------ reports */
  // Issue 12: figures for a date range; the charts are SVG drawn by the server, shown as images.

  const rp = {
    form: $("report-form"),
    from: $("rp-from"),
    to: $("rp-to"),
    csv: $("rp-csv"),
    msg: $("rp-msg"),
    figures: $("rp-figures"),
    charts: $("rp-charts"),
    agents: $("rp-agents"),
  };

  function span(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function ratingText(r) {
    return r.count ? `${r.average} of 5 (${r.count})` : "—";
  }

  async function loadReport(from, to) {
    const mine = ++seq;
    for (const f of ["from", "to"]) $(`rpe-${f}`).textContent = "";
    rp.msg.textContent = "Loading…";
    const query = new URLSearchParams();
    if (from) query.set("from", from);
    if (to) query.set("to", to);
    const qs = query.toString() ? `?${query}` : "";
    let r;
    try {
      r = await api(`/api/admin/reports${qs}`);
    } catch (err) {
      if (mine !== seq) return;
      if (err.field) $(`rpe-${err.field}`).textContent = err.message;
      rp.msg.textContent = err.field ? "" : err.message;
      return;
    }
    if (mine !== seq) return;
    rp.msg.textContent = "";
    rp.from.value = r.from;
    rp.to.value = r.to;
    const range = `?from=${encodeURIComponent(r.from)}&to=${encodeURIComponent(r.to)}`;
    rp.csv.href = `/api/admin/reports/csv${range}`;
    rp.figures.textContent = "";
    const figure = (label, value) => {
      const box = el("div", "report-figure");
      box.append(el("div", "report-value", value), el("div", "report-label", label));
      rp.figures.appendChild(box);
    };
    figure("Conversations", String(r.conversations));
    figure("First reply, median", span(r.first_reply.median_seconds));
    figure("First reply, 90th percentile", span(r.first_reply.p90_seconds));
    figure("Messages per conversation, median", r.length.median_messages ?? "—");
    figure("Duration, median", span(r.length.median_duration_seconds));
    figure("Rating", ratingText(r.ratings));
    rp.charts.textContent = "";
    for (const [kind, alt] of [["per_day", "Conversations per day"], ["first_reply", "Median time to first reply per agent"], ["ratings", "Ratings"]]) {
      const img = el("img", "report-chart");
      img.src = `/api/admin/reports/charts/${kind}${range}`;
      img.alt = alt;
      img.width = 720;
      img.height = 260;
      rp.charts.appendChild(img);
    }
    rp.agents.textContent = "";
    for (const a of r.per_agent) {
      const tr = el("tr");
      tr.append(el("td", "", a.agent), el("td", "num", a.conversations),
        el("td", "", span(a.first_reply.median_seconds)), el("td", "", span(a.first_reply.p90_seconds)),
        el("td", "num", a.length.median_messages ?? "—"), el("td", "", ratingText(a.ratings)));
      rp.agents.appendChild(tr);
    }
    if (!r.per_agent.length) {
      const tr = el("tr");
      const td = el("td", "", "No agent handled a conversation in this range.");
      td.colSpan = 6;
      tr.appendChild(td);
      rp.agents.appendChild(tr);
    }
  }

  rp.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (rp.from.value) q.set("from", rp.from.value);
    if (rp.to.value) q.set("to", rp.to.value);
    go(`#/reports?${q}`);
  });

  /* ------------------------------------------------------------------ canned responses */
  // Issue 12: admins keep the replies agents insert with "/shortcut"; every change is audited.

  const cn = {
    rows: $("canned-rows"),
    empty: $("canned-empty"),
    form: $("canned-form"),
    title: $("canned-form-title"),
    shortcut: $("cf-shortcut"),
    body: $("cf-body"),
    submit: $("cf-submit"),
    cancel: $("cf-cancel"),
    msg: $("cf-msg"),
    editing: null,
  };

  function cannedFieldErrors(field, message) {
    for (const f of ["shortcut", "body"]) {
      const box = $(`cfe-${f}`);
      box.textContent = f === field ? message : "";
      const input = cn[f];
      if (f === field) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
  }

  function cannedEditMode(item) {
    cn.editing = item ? item.id : null;
    cn.title.textContent = item ? `Change /${item.shortcut}` : "Add a canned response";
    cn.submit.textContent = item ? "Save changes" : "Add canned response";
    cn.cancel.hidden = !item;
    cn.shortcut.value = item ? item.shortcut : "";
    cn.body.value = item ? item.body : "";
    cannedFieldErrors(null, "");
  }

  async function loadCanned() {
    const mine = ++seq;
    let data;
    try {
      data = await api("/api/admin/canned");
    } catch (err) {
      if (mine === seq) cn.msg.textContent = err.message;
      return;
    }
    if (mine !== seq) return;
    const items = Array.isArray(data.canned) ? data.canned : [];
    cn.rows.textContent = "";
    cn.empty.hidden = items.length > 0;
    for (const item of items) {
      const tr = el("tr");
      const sc = el("td");
      sc.appendChild(el("code", "", `/${item.shortcut}`));
      const body = el("td", "canned-body", item.body);
      const changed = el("td", "", when(item.updated_at));
      const actions = el("td", "row-actions");
      const edit = el("button", "secondary small", "Edit");
      edit.type = "button";
      edit.setAttribute("aria-label", `Edit /${item.shortcut}`);
      edit.addEventListener("click", () => {
        cannedEditMode(item);
        cn.msg.textContent = "";
        cn.shortcut.focus();
      });
      const del = el("button", "danger-outline small", "Delete");
      del.type = "button";
      del.setAttribute("aria-label", `Delete /${item.shortcut}`);
      del.addEventListener("click", async () => {
        if (!window.confirm(`Delete the canned response /${item.shortcut}?`)) return;
        try {
          await api(`/api/admin/canned/${item.id}`, "DELETE");
          cn.msg.textContent = `Deleted /${item.shortcut}.`;
          if (cn.editing === item.id) cannedEditMode(null);
        } catch (err) {
          cn.msg.textContent = err.message;
        }
        loadCanned();
      });
      actions.append(edit, del);
      tr.append(sc, body, changed, actions);
      cn.rows.appendChild(tr);
    }
  }

  cn.form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    cannedFieldErrors(null, "");
    cn.msg.textContent = "";
    const payload = { shortcut: cn.shortcut.value.trim(), body: cn.body.value };
    const editing = cn.editing;
    cn.submit.disabled = true;
    try {
      const data = editing === null
        ? await api("/api/admin/canned", "POST", payload)
        : await api(`/api/admin/canned/${editing}`, "PATCH", payload);
      cn.msg.textContent = `${editing === null ? "Added" : "Saved"} /${data.canned.shortcut}.`;
      cannedEditMode(null);
      loadCanned();
    } catch (err) {
      const field = err.field || (err.code === "shortcut_taken" ? "shortcut" : err.code === "unknown_placeholder" ? "body" : null);
      if (field) cannedFieldErrors(field, err.message);
      else cn.msg.textContent = err.message;
    } finally {
      cn.submit.disabled = false;
    }
  });

  cn.cancel.addEventListener("click", () => {
    cannedEditMode(null);
    cn.msg.textContent = "";
  });

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

  /* A row opened under a table row for a form, a confirmation, a result or more detail. One
   * is open per table; asking again for the same kind closes it (unless `keep`). */
  function openSub(tr, kind, cols, keep) {
    const next = tr.nextElementSibling;
    const same = next && next.classList.contains("sub-row") && next.dataset.kind === kind;
    for (const r of tr.parentNode.querySelectorAll(".sub-row, .confirm-row")) {
      r.remove();
      if (r._onDismiss) r._onDismiss(); // e.g. a role select goes back to the actual role
    }
    if (same && !keep) return null;
    const row = el("tr", `sub-row sub-${kind}`);
    row.dataset.kind = kind;
    const td = el("td");
    td.colSpan = cols;
    const box = el("div", "sub-panel");
    td.appendChild(box);
    row.appendChild(td);
    tr.after(row);
    return box;
  }

  function closeSubOf(tr) {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("sub-row")) next.remove();
  }

  function subMessage(tr, cols, kind, text) {
    const box = openSub(tr, `msg-${kind}`, cols, true);
    box.classList.add(`sub-msg-${kind}`);
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    box.appendChild(el("p", "sub-msg-text", text));
    const close = el("button", "link-button sub-close", "Dismiss");
    close.type = "button";
    close.addEventListener("click", () => box.closest("tr").remove());
    box.appendChild(close);
    return box;
  }

  /* A small read-only table: `columns` is [[heading, (row) => text, className], ...]. */
  function miniTable(caption, columns, items) {
    const wrap = el("div", "mini-table-wrap");
    const table = el("table", "mini-table");
    if (caption) table.appendChild(el("caption", "sr-only", caption));
    const thead = el("thead");
    const hr = el("tr");
    for (const [h] of columns) {
      const th = el("th", "", h);
      th.scope = "col";
      hr.appendChild(th);
    }
    thead.appendChild(hr);
    const tbody = el("tbody");
    for (const item of items) {
      const tr = el("tr");
      for (const [, get, cls] of columns) {
        const v = get(item);
        const td = el("td", cls || "");
        if (v instanceof Node) td.appendChild(v);
        else td.textContent = v === null || v === undefined || v === "" ? "—" : String(v);
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    }
    table.append(thead, tbody);
    wrap.appendChild(table);
    return wrap;
  }

  function timeCell(value) {
    const span = el("span", "", when(value));
    span.title = whenFull(value);
    return span;
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many || `${one}s`}`;
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

  /* The search words stay in memory (privateSearch); the hash holds the page only. */
  function goCustomers(q, offset) {
    privateSearch.customers = q;
    go(`#/customers${offset ? `?offset=${offset}` : ""}`);
  }

  async function loadCustomers(q, offset, keepNotice) {
    cust.q.value = q;
    custState = { q, offset, total: custState.total };
    if (!keepNotice) cust.notice.hidden = true;
    const mine = ++seq;
    const body = { limit: PAGE, offset };
    if (q) body.q = q;
    if (!cust.rows.children.length || !keepNotice) messageRow(cust.rows, "Loading…", "muted", CUST_COLS);
    cust.prev.disabled = true;
    cust.next.disabled = true;
    let data;
    try {
      data = await api("/api/admin/search/customers", "POST", body);
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
    const access = el("button", "secondary small", "Access records");
    access.type = "button";
    access.dataset.action = "access";
    access.setAttribute("aria-label", `Access records of ${c.name || c.email || "this customer"}`);
    actions.appendChild(access);
    const edit = el("button", "secondary small", "Correct");
    edit.type = "button";
    edit.dataset.action = "edit";
    edit.setAttribute("aria-label", `Correct the details of ${c.name || c.email || "this customer"}`);
    actions.appendChild(edit);
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
    for (const open of cust.rows.querySelectorAll(".confirm-row, .sub-row")) open.remove();
    for (const b of cust.rows.querySelectorAll("[data-action=access]")) b.setAttribute("aria-expanded", "false");
  }

  const ACCESS_KINDS = { session_start: "Session start", socket: "Chat connection" };

  async function openAccess(tr, button) {
    const c = tr._customer;
    const box = openSub(tr, "access", CUST_COLS);
    if (!box) {
      button.setAttribute("aria-expanded", "false");
      return;
    }
    for (const b of cust.rows.querySelectorAll("[data-action=access]")) b.setAttribute("aria-expanded", "false");
    button.setAttribute("aria-expanded", "true");
    const head = el("div", "sub-head");
    head.appendChild(el("strong", "", `Access records of ${c.name || c.email || c.id}`));
    const close = el("button", "link-button", "Close");
    close.type = "button";
    close.addEventListener("click", () => {
      box.closest("tr").remove();
      button.setAttribute("aria-expanded", "false");
      button.focus();
    });
    head.appendChild(close);
    box.appendChild(head);
    box.appendChild(el("p", "sub-note", "Time, kind, IP address and browser of each visit, newest first; "
      + "they are deleted once past their retention period. Viewing them is recorded in the audit log "
      + "(customer.access_view)."));
    const body = el("div", "sub-body", "Loading…");
    box.appendChild(body);
    let data;
    try {
      data = await api(`/api/admin/customers/${encodeURIComponent(c.id)}/access`);
    } catch (err) {
      body.textContent = "";
      body.appendChild(el("p", "form-error", err.status === 404 ? "This customer no longer exists." : err.message));
      return;
    }
    if (!box.isConnected) return;
    const list = (data && data.access) || [];
    body.textContent = "";
    if (!list.length) {
      body.appendChild(el("p", "muted", "No access records are held for this customer."));
      return;
    }
    body.appendChild(miniTable(`Access records of ${c.name || c.id}`, [
      ["Time", (r) => timeCell(r.at), "nowrap"],
      ["Kind", (r) => {
        const k = el("span", "kind-tag", ACCESS_KINDS[r.kind] || r.kind || "—");
        if (r.kind) k.title = r.kind;
        return k;
      }, "nowrap"],
      ["IP address", (r) => r.ip, "mono nowrap"],
      ["User agent", (r) => r.user_agent, "mono ua"],
    ], list));
    body.appendChild(el("p", "hint", list.length >= 500
      ? "The newest 500 records are shown."
      : `${plural(list.length, "record")}.`));
  }

  // A correction asked for by email: the same rules as the customer's own account page.
  function openCorrect(tr, button) {
    const c = tr._customer;
    const box = openSub(tr, "edit", CUST_COLS);
    if (!box) return;
    const form = el("form", "correct-box");
    form.noValidate = true;
    form.appendChild(el("strong", "", `Correct the details of ${c.name || c.email || c.id}`));
    form.appendChild(el("p", "sub-note", "For a correction the customer asked for. The change is "
      + "recorded in the audit log (customer.correct, with the names of the fields changed)."));
    const inputs = {};
    const errors = {};
    for (const [field, label, max] of [["name", "Name", 100], ["email", "Email", 254], ["company", "Company", 200]]) {
      const id = `correct-${field}-${c.id}`;
      const lab = el("label", "", label);
      lab.htmlFor = id;
      const input = el("input");
      input.type = field === "email" ? "email" : "text";
      input.id = id;
      input.maxLength = max;
      input.value = c[field] || "";
      inputs[field] = input;
      errors[field] = el("p", "form-error");
      form.append(lab, input, errors[field]);
    }
    const msg = el("p", "form-error");
    msg.setAttribute("role", "alert");
    const actions = el("div", "form-actions");
    const save = el("button", "", "Save");
    save.type = "submit";
    const cancel = el("button", "secondary", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => {
      box.closest("tr").remove();
      button.focus();
    });
    actions.append(save, cancel);
    form.append(msg, actions);
    box.appendChild(form);
    inputs.name.focus();
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      for (const e of Object.values(errors)) e.textContent = "";
      msg.textContent = "";
      const body = {};
      for (const [field, input] of Object.entries(inputs)) {
        if (input.value.trim() !== (c[field] || "")) body[field] = input.value.trim();
      }
      if (!Object.keys(body).length) {
        msg.textContent = "Nothing was changed.";
        return;
      }
      save.disabled = true;
      try {
        const data = await api(`/api/admin/customers/${encodeURIComponent(c.id)}`, "PATCH", body);
        const updated = { ...c, ...((data && data.customer) || body) };
        const fresh = customerRow(updated);
        box.closest("tr").remove();
        tr.replaceWith(fresh);
        notice(cust.notice, "ok", "The customer's details were corrected.");
      } catch (err) {
        save.disabled = false;
        const field = err.code === "cc_not_allowed" ? "email" : err.field;
        if (errors[field]) errors[field].textContent = err.message;
        else msg.textContent = err.message;
      }
    });
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
    else if (b.dataset.action === "access") openAccess(tr, b);
    else if (b.dataset.action === "edit") openCorrect(tr, b);
  });

  cust.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    goCustomers(cust.q.value.trim(), 0);
  });
  cust.prev.addEventListener("click", () => goCustomers(custState.q, Math.max(0, custState.offset - PAGE)));
  cust.next.addEventListener("click", () => goCustomers(custState.q, custState.offset + PAGE));

  /* ------------------------------------------------------------------ staff */

  const st = {
    rows: $("staff-rows"),
    form: $("staff-add"),
    submit: $("sa-submit"),
    msg: $("sa-msg"),
  };
  const STAFF_COLS = 7;
  const ME = Number(root.dataset.staffId);
  const ADD_FIELDS = ["name", "display_name", "role", "password"];
  const OUTCOMES = {
    success: "Signed in",
    bad_password: "Wrong password",
    unknown_user: "Unknown name",
    disabled: "Account disabled",
    throttled: "Refused: too many failures",
  };

  function roleName(role) {
    return role === "admin" ? "an admin" : "an agent";
  }

  function isMe(s) {
    return Number(s.id) === ME;
  }

  async function loadStaff() {
    const mine = ++seq;
    messageRow(st.rows, "Loading…", "muted", STAFF_COLS);
    let data;
    try {
      data = await api("/api/admin/staff");
    } catch (err) {
      if (mine === seq) messageRow(st.rows, err.message, "form-error", STAFF_COLS);
      return;
    }
    if (mine !== seq) return;
    const list = (data && data.staff) || [];
    staffCache = list;
    fillAgentSelect();
    st.rows.textContent = "";
    if (!list.length) messageRow(st.rows, "No staff accounts.", "muted", STAFF_COLS);
    for (const s of list) st.rows.appendChild(staffRow(s));
  }

  function staffRow(s) {
    const tr = el("tr");
    tr.dataset.id = String(s.id);
    fillStaffRow(tr, s);
    return tr;
  }

  function actionButton(label, action, cls, aria) {
    const b = el("button", cls || "secondary small", label);
    b.type = "button";
    b.dataset.action = action;
    if (aria) b.setAttribute("aria-label", aria);
    return b;
  }

  function fillStaffRow(tr, s) {
    tr._staff = s;
    tr.textContent = "";
    tr.className = s.state === "disabled" ? "is-disabled" : "";
    const name = el("td", "who");
    name.appendChild(el("span", "staff-name", s.name));
    if (isMe(s)) name.appendChild(el("span", "you-tag", "you"));
    name.appendChild(el("div", "sub", `#${s.id}`));

    // Customers see this name, never the sign-in name.
    const shown = el("td", "display-name");
    shown.appendChild(el("span", "", s.display_name || ""));
    shown.appendChild(document.createTextNode(" "));
    shown.appendChild(actionButton("Change", "display", "secondary small", `Change the name customers see for ${s.name}`));

    const role = el("td");
    const select = el("select", "role-select");
    select.dataset.action = "role";
    select.setAttribute("aria-label", `Role of ${s.name}`);
    for (const [v, label] of [["agent", "Agent"], ["admin", "Admin"]]) {
      const o = el("option", "", label);
      o.value = v;
      select.appendChild(o);
    }
    select.value = s.role;
    role.appendChild(select);

    const state = el("td");
    state.appendChild(el("span", `state-tag state-${s.state === "disabled" ? "disabled" : "active"}`,
      s.state === "disabled" ? "Disabled" : "Active"));

    const created = whenCell(s.created_at);
    const last = s.last_login ? whenCell(s.last_login) : el("td", "muted", "Never");

    const actions = el("td", "row-actions staff-actions");
    actions.append(
      s.state === "disabled"
        ? actionButton("Enable", "enable", "secondary small", `Enable ${s.name}`)
        : actionButton("Disable", "disable", "danger-outline small", `Disable ${s.name}`),
      actionButton("Reset password", "password", "secondary small", `Reset password of ${s.name}`),
      actionButton("Force logout", "logout", "secondary small", `Force logout ${s.name} (ends all their sessions)`),
      actionButton("Sign-in history", "history", "secondary small", `Sign-in history of ${s.name}`),
    );
    tr.append(name, shown, role, state, created, last, actions);
  }

  function staffChanged(s) {
    if (!staffCache) return;
    const i = staffCache.findIndex((x) => Number(x.id) === Number(s.id));
    if (i >= 0) staffCache[i] = s;
    fillAgentSelect();
  }

  /* An inline yes/no under the row; `onYes` runs when confirmed. */
  function confirmSub(tr, text, yesLabel, danger, onYes, onNo, trigger) {
    const box = openSub(tr, "confirm", STAFF_COLS, true);
    const row = box.closest("tr");
    row._onDismiss = onNo || null;
    box.classList.add("sub-confirm");
    box.appendChild(el("p", "", text));
    const actions = el("div", "form-actions");
    const yes = el("button", danger ? "danger" : "", yesLabel);
    yes.type = "button";
    const no = el("button", "secondary", "Cancel");
    no.type = "button";
    actions.append(yes, no);
    box.appendChild(actions);
    yes.focus();
    no.addEventListener("click", () => {
      row.remove();
      if (onNo) onNo();
      if (trigger && trigger.isConnected) trigger.focus();
    });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      no.disabled = true;
      row._onDismiss = null; // answered: what follows replaces this row
      await onYes();
    });
  }

  function staffError(tr, err) {
    const text = err.code === "last_admin"
      ? "Nothing changed: that would leave no active admin. Make someone else an admin first."
      : err.message;
    subMessage(tr, STAFF_COLS, "error", text);
  }

  function signedOutSelf() {
    // Our own sessions just ended: the page becomes the sign-in form.
    window.location.reload();
  }

  async function patchStaff(tr, body, okText) {
    const s = tr._staff;
    let data;
    try {
      data = await api(`/api/admin/staff/${encodeURIComponent(s.id)}`, "PATCH", body);
    } catch (err) {
      fillStaffRow(tr, s); // puts the role back
      staffError(tr, err);
      return;
    }
    const updated = { ...s, ...((data && data.staff) || body), last_login: s.last_login };
    if (isMe(s) && (body.role || body.state === "disabled")) return signedOutSelf();
    fillStaffRow(tr, updated);
    staffChanged(updated);
    subMessage(tr, STAFF_COLS, "ok", okText(updated));
  }

  function askRole(tr, select) {
    const s = tr._staff;
    const want = select.value;
    if (want === s.role) {
      closeSubOf(tr);
      return;
    }
    const text = isMe(s)
      ? `Make yourself ${roleName(want)}? You lose the admin console and are signed out at once.`
      : `Make ${s.name} ${roleName(want)}? Their open sessions end now; the new role applies when they sign in again.`;
    confirmSub(tr, text, "Change role", isMe(s), () => patchStaff(tr, { role: want },
      (u) => `${u.name} is now ${roleName(u.role)}. Their sessions were ended.`),
    () => {
      if (select.isConnected) select.value = tr._staff.role;
    }, select);
  }

  function askDisable(tr) {
    const s = tr._staff;
    const text = isMe(s)
      ? "Disable your own account? You are signed out at once and cannot sign in until another admin enables it."
      : `Disable ${s.name}? They are signed out everywhere at once and cannot sign in until enabled again.`;
    confirmSub(tr, text, "Disable account", true, () => patchStaff(tr, { state: "disabled" },
      (u) => `${u.name} is disabled and signed out.`), null, tr.querySelector("[data-action=disable]"));
  }

  function openPassword(tr) {
    const s = tr._staff;
    const box = openSub(tr, "password", STAFF_COLS);
    if (!box) return;
    const form = el("form", "pw-form");
    form.noValidate = true;
    const id = `pw-new-${s.id}`;
    const label = el("label", "", `New password for ${s.name}`);
    label.htmlFor = id;
    const row = el("div", "pw-row");
    const input = el("input");
    input.type = "password";
    input.id = id;
    input.autocomplete = "new-password";
    input.minLength = 12;
    input.maxLength = 128;
    input.required = true;
    const err = el("p", "field-error");
    err.id = `${id}-error`;
    err.setAttribute("role", "alert");
    const hint = el("p", "hint", "Passwords: 12 to 128 characters, no composition rules; common and easily guessed ones (keyboard rows, repeats, decorated words) are refused. A few unrelated words make a strong one.");
    hint.id = `${id}-hint`;
    input.setAttribute("aria-describedby", `${err.id} ${hint.id}`);
    const save = el("button", "", "Set password");
    save.type = "submit";
    const cancel = el("button", "secondary", "Cancel");
    cancel.type = "button";
    row.append(input, save, cancel);
    form.append(label, row, err, hint);
    form.appendChild(el("p", "sub-note", isMe(s)
      ? "This is your own account: you are signed out and then sign in with the new password."
      : `${s.name} is signed out everywhere and signs in with the new password from now on.`));
    box.appendChild(form);
    input.focus();

    const setErr = (text) => {
      err.textContent = text || "";
      if (text) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    };
    input.addEventListener("input", () => setErr(""));
    cancel.addEventListener("click", () => {
      box.closest("tr").remove();
      const b = tr.querySelector("[data-action=password]");
      if (b) b.focus();
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const pw = input.value;
      if (pw.length < 12) return setErr("Passwords need at least 12 characters."), input.focus();
      if (pw.length > 128) return setErr("Passwords may have at most 128 characters."), input.focus();
      save.disabled = true;
      cancel.disabled = true;
      let data;
      try {
        data = await api(`/api/admin/staff/${encodeURIComponent(s.id)}/password`, "POST", { password: pw });
      } catch (e) {
        save.disabled = false;
        cancel.disabled = false;
        setErr(e.message);
        input.focus();
        return;
      }
      input.value = "";
      if (isMe(s)) return signedOutSelf();
      const n = Number(data && data.sessions_ended) || 0;
      subMessage(tr, STAFF_COLS, "ok", `Password changed for ${s.name}. `
        + (n ? `${plural(n, "session")} ended.` : "They had no open session."));
    });
  }

  function openDisplayName(tr) {
    const s = tr._staff;
    const box = openSub(tr, "display", STAFF_COLS);
    if (!box) return;
    const form = el("form", "pw-form");
    form.noValidate = true;
    const id = `dn-new-${s.id}`;
    const label = el("label", "", `Name customers see for ${s.name}`);
    label.htmlFor = id;
    const row = el("div", "pw-row");
    const input = el("input");
    input.type = "text";
    input.id = id;
    input.autocomplete = "off";
    input.maxLength = 60;
    input.required = true;
    input.value = s.display_name || "";
    const err = el("p", "field-error");
    err.id = `${id}-error`;
    err.setAttribute("role", "alert");
    const hint = el("p", "hint", "1 to 60 characters; never a sign-in name, which would tell customers half of a password pair.");
    hint.id = `${id}-hint`;
    input.setAttribute("aria-describedby", `${err.id} ${hint.id}`);
    const save = el("button", "", "Save");
    save.type = "submit";
    const cancel = el("button", "secondary", "Cancel");
    cancel.type = "button";
    row.append(input, save, cancel);
    form.append(label, row, err, hint);
    box.appendChild(form);
    input.focus();
    input.select();

    const setErr = (text) => {
      err.textContent = text || "";
      if (text) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    };
    input.addEventListener("input", () => setErr(""));
    cancel.addEventListener("click", () => {
      box.closest("tr").remove();
      const b = tr.querySelector("[data-action=display]");
      if (b) b.focus();
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const want = input.value.trim();
      if (!want) return setErr("Required."), input.focus();
      save.disabled = true;
      cancel.disabled = true;
      let data;
      try {
        data = await api(`/api/admin/staff/${encodeURIComponent(s.id)}`, "PATCH", { display_name: want });
      } catch (e) {
        save.disabled = false;
        cancel.disabled = false;
        setErr(e.message);
        input.focus();
        return;
      }
      const updated = { ...s, ...((data && data.staff) || {}), last_login: s.last_login };
      fillStaffRow(tr, updated);
      staffChanged(updated);
      subMessage(tr, STAFF_COLS, "ok", `Customers now see ${s.name} as “${updated.display_name}”.`);
    });
  }

  async function forceLogout(tr, button) {
    const s = tr._staff;
    button.disabled = true;
    let data;
    try {
      data = await api(`/api/admin/staff/${encodeURIComponent(s.id)}/logout`, "POST");
    } catch (err) {
      button.disabled = false;
      staffError(tr, err);
      return;
    }
    if (isMe(s)) return signedOutSelf();
    button.disabled = false;
    const n = Number(data && data.sessions_ended) || 0;
    subMessage(tr, STAFF_COLS, "ok", n
      ? `${plural(n, "session")} of ${s.name} ended (sessions_ended: ${n}); their open dashboards closed.`
      : `${s.name} had no open session (sessions_ended: 0).`);
  }

  async function openHistory(tr, button) {
    const s = tr._staff;
    const box = openSub(tr, "history", STAFF_COLS);
    for (const b of st.rows.querySelectorAll("[data-action=history]")) b.setAttribute("aria-expanded", "false");
    if (!box) return;
    button.setAttribute("aria-expanded", "true");
    const head = el("div", "sub-head");
    head.appendChild(el("strong", "", `Sign-in history of ${s.name}`));
    const close = el("button", "link-button", "Close");
    close.type = "button";
    close.addEventListener("click", () => {
      box.closest("tr").remove();
      button.setAttribute("aria-expanded", "false");
      button.focus();
    });
    head.appendChild(close);
    box.appendChild(head);
    const body = el("div", "sub-body", "Loading…");
    box.appendChild(body);
    let data;
    try {
      data = await api(`/api/admin/staff/${encodeURIComponent(s.id)}/logins`);
    } catch (err) {
      body.textContent = "";
      body.appendChild(el("p", "form-error", err.message));
      return;
    }
    if (!box.isConnected) return;
    const list = (data && data.logins) || [];
    body.textContent = "";
    if (!list.length) {
      body.appendChild(el("p", "muted", "No sign-in attempts recorded."));
      return;
    }
    body.appendChild(miniTable(`Sign-in history of ${s.name}`, [
      ["Time", (e) => timeCell(e.at), "nowrap"],
      ["Outcome", (e) => {
        const ok = e.outcome === "success";
        const tag = el("span", `outcome-tag ${ok ? "outcome-ok" : "outcome-bad"}`, OUTCOMES[e.outcome] || e.outcome || "—");
        if (e.outcome) tag.title = e.outcome;
        return tag;
      }, "nowrap"],
      ["IP address", (e) => e.ip, "mono nowrap"],
      ["User agent", (e) => e.user_agent, "mono ua"],
    ], list));
    body.appendChild(el("p", "hint", `${plural(list.length, "attempt")}, newest first${list.length >= 100 ? " (the newest 100)" : ""}.`));
  }

  st.rows.addEventListener("change", (ev) => {
    const select = ev.target.closest("select[data-action=role]");
    if (!select) return;
    const tr = select.closest("tr");
    if (tr && tr._staff) askRole(tr, select);
  });

  st.rows.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (!b) return;
    const tr = b.closest("tr");
    if (!tr || !tr._staff) return;
    const s = tr._staff;
    switch (b.dataset.action) {
      case "disable":
        askDisable(tr);
        break;
      case "enable":
        b.disabled = true;
        patchStaff(tr, { state: "active" }, (u) => `${u.name} is active again and can sign in.`);
        break;
      case "password":
        openPassword(tr);
        break;
      case "display":
        openDisplayName(tr);
        break;
      case "logout":
        if (isMe(s)) {
          confirmSub(tr, "Sign yourself out everywhere, this browser included?", "Sign me out", true,
            () => forceLogout(tr, b), null, b);
        } else {
          forceLogout(tr, b);
        }
        break;
      case "history":
        openHistory(tr, b);
        break;
      default:
    }
  });

  function addFieldError(f, text) {
    const input = $(`sa-${f}`);
    $(`sae-${f}`).textContent = text || "";
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  st.form.addEventListener("input", (ev) => {
    const f = ev.target && ev.target.name;
    if (ADD_FIELDS.includes(f)) addFieldError(f, "");
    st.msg.textContent = "";
  });

  st.form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      name: $("sa-name").value.trim(),
      role: $("sa-role").value,
      password: $("sa-password").value,
    };
    const shownAs = $("sa-display_name").value.trim();
    if (shownAs) body.display_name = shownAs;
    for (const f of ADD_FIELDS) addFieldError(f, "");
    st.msg.className = "form-msg";
    st.msg.textContent = "";
    let first = null;
    const fail = (f, text) => {
      addFieldError(f, text);
      first = first || f;
    };
    if (!body.name) fail("name", "Required.");
    else if (/\s/.test(body.name)) fail("name", "No spaces: the name is what they sign in with.");
    if (shownAs && body.name && shownAs.toLowerCase() === body.name.toLowerCase()) {
      fail("display_name", "Customers see this name: it must not be the sign-in name.");
    }
    if (!body.password) fail("password", "Required.");
    else if (body.password.length < 12) fail("password", "Passwords need at least 12 characters.");
    else if (body.password.length > 128) fail("password", "Passwords may have at most 128 characters.");
    if (first) return $(`sa-${first}`).focus();
    st.submit.disabled = true;
    try {
      const data = await api("/api/admin/staff", "POST", body);
      const added = (data && data.staff) || body;
      st.form.reset();
      st.msg.className = "form-msg ok";
      st.msg.textContent = `Added ${added.name} as ${roleName(added.role)}. They can sign in now.`;
      await loadStaff();
    } catch (err) {
      const f = err.code === "name_taken" ? "name" : err.field;
      if (ADD_FIELDS.includes(f)) {
        addFieldError(f, err.message);
        $(`sa-${f}`).focus();
      } else {
        st.msg.className = "form-msg form-error";
        st.msg.textContent = err.message;
      }
    } finally {
      st.submit.disabled = false;
    }
  });

  /* ------------------------------------------------------------------ privacy policy */

  const pol = {
    rows: $("policy-rows"),
    form: $("policy-form"),
    submit: $("p-submit"),
    msg: $("p-msg"),
    preview: $("p-preview"),
    confirm: $("p-confirm"),
    pending: null, // the body that was previewed, published only once confirmed
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
    loadCurrentText();
  }

  // A new version starts from the current text, so an edit is a change, not a rewrite.
  async function loadCurrentText() {
    const ta = $("p-text");
    if (ta.value.trim() && ta.dataset.from !== ta.value) return; // keep the admin's edits
    let data;
    try {
      data = await api("/api/admin/policies/current");
    } catch (_) {
      return;
    }
    const p = data && data.policy;
    if (!p || (ta.value.trim() && ta.dataset.from !== ta.value)) return;
    ta.value = p.text;
    ta.dataset.from = p.text;
    $("p-from").textContent = ` (${p.version})`;
    $("p-bundled").hidden = !data.bundled;
  }

  function hidePreview() {
    pol.preview.hidden = true;
    pol.pending = null;
  }

  pol.form.addEventListener("input", (ev) => {
    const f = ev.target && ev.target.name;
    if (POLICY_FIELDS.includes(f)) policyFieldError(f, "");
    pol.msg.textContent = "";
    hidePreview(); // what was previewed is no longer what would be published
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
    hidePreview();
    if (first) return $(`p-${first}`).focus();
    pol.submit.disabled = true;
    try {
      const data = await api("/api/admin/policies/preview", "POST", { text: body.text });
      // Trusted HTML: the server's own rendering of the policy, as /policy will show it.
      $("p-preview-html").innerHTML = data.html;
      const n = data.open_conversations;
      $("p-preview-title").textContent = `Preview of version ${body.version}`;
      $("p-impact").textContent = n
        ? `Publishing pauses ${n} open ${n === 1 ? "chat" : "chats"} at once: ${n === 1 ? "its visitor" : "their visitors"} must accept version ${body.version} before going on.`
        : "No chat is open now, so publishing pauses none; every visitor accepts the new version before their next chat.";
      pol.confirm.textContent = `Publish version ${body.version}`;
      pol.pending = body;
      pol.preview.hidden = false;
      $("p-preview-title").focus();
    } catch (err) {
      showPolicyError(err, body);
    } finally {
      pol.submit.disabled = false;
    }
  });

  $("p-cancel").addEventListener("click", () => {
    hidePreview();
    $("p-text").focus();
  });

  pol.confirm.addEventListener("click", async () => {
    const body = pol.pending;
    if (!body) return;
    pol.confirm.disabled = true;
    try {
      const data = await api("/api/admin/policies", "POST", body);
      const v = (data && data.policy && data.policy.version) || body.version;
      hidePreview();
      pol.form.reset();
      $("p-text").dataset.from = "";
      $("p-effective_date").value = today();
      pol.msg.className = "form-msg ok";
      pol.msg.textContent = `Published version ${v}. It is now the current policy.`;
      pol.submit.focus();
      loadPolicies();
    } catch (err) {
      hidePreview();
      showPolicyError(err, body);
    } finally {
      pol.confirm.disabled = false;
    }
  });

  function showPolicyError(err, body) {
    const f = err.code === "version_exists" ? "version" : err.field;
    if (POLICY_FIELDS.includes(f)) {
      policyFieldError(f, err.code === "version_exists" ? `Version ${body.version} already exists.` : err.message);
      $(`p-${f}`).focus();
    } else {
      pol.msg.className = "form-msg form-error";
      pol.msg.textContent = err.message;
    }
  }

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

  const au = {
    form: $("audit-filter"),
    error: $("audit-error"),
    clear: $("af-clear"),
    verify: $("audit-verify"),
    verifyResult: $("audit-verify-result"),
  };
  let auditState = { filters: readFilters(new URLSearchParams(), AUDIT_FILTERS), offset: 0 };

  function auditFormFilters() {
    const f = {};
    for (const k of AUDIT_FILTERS) f[k] = $(`af-${k}`).value.trim();
    return f;
  }

  /* A day as the ISO time of its start in UTC, written the way the server stores times
   * (with microseconds), since the server compares them as text. */
  function dayStart(day) {
    return `${day}T00:00:00.000000Z`;
  }

  async function loadAudit(filters, offset) {
    auditState = { filters, offset };
    for (const k of AUDIT_FILTERS) {
      const input = $(`af-${k}`);
      input.value = input.type === "date" ? (DATE_RE.test(filters[k]) ? filters[k] : "") : filters[k];
      input.removeAttribute("aria-invalid");
    }
    au.error.textContent = "";
    const mine = ++seq;
    ui.auditPrev.disabled = true;
    ui.auditNext.disabled = true;
    ui.auditRange.textContent = "";
    for (const k of ["since", "before"]) {
      if (filters[k] && !DATE_RE.test(filters[k])) {
        au.error.textContent = `${k === "since" ? "Since" : "Before"} must be a date like 2026-11-28.`;
        $(`af-${k}`).setAttribute("aria-invalid", "true");
        messageRow(ui.auditRows, "Correct the filter above to see entries.", "muted", 7);
        return;
      }
    }
    const p = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    for (const k of ["actor", "action", "target"]) if (filters[k]) p.set(k, filters[k]);
    if (filters.since) p.set("since", dayStart(filters.since));
    if (filters.before) p.set("before", dayStart(filters.before));
    messageRow(ui.auditRows, "Loading…", "muted", 7);
    let data;
    try {
      data = await api(`/api/admin/audit?${p}`);
    } catch (err) {
      if (mine !== seq) return;
      if (err.status === 422) {
        au.error.textContent = err.message;
        messageRow(ui.auditRows, "Correct the filter above to see entries.", "muted", 7);
      } else {
        messageRow(ui.auditRows, err.message, "form-error", 7);
      }
      return;
    }
    if (mine !== seq) return;
    const entries = (data && data.entries) || [];
    ui.auditRows.textContent = "";
    const filtered = AUDIT_FILTERS.some((k) => filters[k]);
    if (!entries.length) messageRow(ui.auditRows, filtered ? "No entries match." : "No entries.", "muted", 7);
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
    ui.auditRange.textContent = entries.length
      ? `${filtered ? "Matching entries" : "Entries"} ${offset + 1}–${offset + entries.length}, newest first`
      : offset ? "Nothing on this page" : "";
    ui.auditPrev.disabled = offset <= 0;
    ui.auditNext.disabled = entries.length < PAGE;
  }

  function auditHash(filters, offset) {
    return filterHash("#/audit", AUDIT_FILTERS, filters, offset);
  }

  au.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = auditFormFilters();
    if (f.since && f.before && f.since >= f.before) {
      au.error.textContent = "“Before” must be a later day than “Since”.";
      $("af-before").setAttribute("aria-invalid", "true");
      $("af-before").focus();
      return;
    }
    go(auditHash(f, 0));
  });
  au.form.addEventListener("input", (ev) => {
    au.error.textContent = "";
    if (ev.target && ev.target.removeAttribute) ev.target.removeAttribute("aria-invalid");
  });
  au.clear.addEventListener("click", () => {
    go("#/audit");
    $("af-actor").focus();
  });

  ui.auditPrev.addEventListener("click", () => {
    go(auditHash(auditState.filters, Math.max(0, auditState.offset - PAGE)));
  });
  ui.auditNext.addEventListener("click", () => go(auditHash(auditState.filters, auditState.offset + PAGE)));

  au.verify.addEventListener("click", async () => {
    au.verify.disabled = true;
    au.verifyResult.className = "verify-result";
    au.verifyResult.textContent = "Checking every entry…";
    try {
      const data = await api("/api/admin/audit/verify");
      if (data && data.intact) {
        au.verifyResult.className = "verify-result verify-ok";
        au.verifyResult.textContent = `Intact: every entry's hash matches the chain (checked ${new Date().toLocaleTimeString()}).`;
      } else {
        au.verifyResult.className = "verify-result verify-bad";
        au.verifyResult.textContent = `Broken at entry ${data ? data.first_broken_id : "?"}: it no longer matches `
          + "the chain, so it was changed, or an entry before it was removed or reordered.";
      }
    } catch (err) {
      au.verifyResult.className = "verify-result form-error";
      au.verifyResult.textContent = err.message;
    } finally {
      au.verify.disabled = false;
    }
  });

  /* ------------------------------------------------------------------ mail outbox */
  const MAIL_KINDS = {
    signin: "Sign-in link", terminate: "Deletion link", reply: "Reply by email",
    transcript: "Transcript", farewell: "Deletion done",
  };
  const MAIL_STATES = {
    pending: ["Waiting", "queued"], sending: ["Sending", "queued"], sent: ["Sent", "active"],
    failed: ["Failed", "failed"], dropped: ["Dropped", "closed"],
  };
  const mailState = { offset: 0 };

  async function loadMail(offset) {
    const mine = ++seq;
    const rows = $("mail-rows");
    mailState.offset = offset;
    messageRow(rows, "Loading…", "muted", 9);
    let data;
    try {
      data = await api(`/api/admin/mail?limit=${PAGE}&offset=${offset}`);
    } catch (err) {
      if (mine === seq) messageRow(rows, err.message, "form-error", 9);
      return;
    }
    if (mine !== seq) return;
    $("mail-off").hidden = !!data.enabled;
    const mails = data.mails || [];
    rows.textContent = "";
    if (!mails.length) messageRow(rows, data.enabled ? "No mail yet." : "No mail: none is sent.", "muted", 9);
    for (const m of mails) {
      const [label, look] = MAIL_STATES[m.status] || [m.status, "other"];
      const status = el("td");
      const tag = el("span", `status-tag status-${look}`, m.status === "pending" && m.attempts ? "Retrying" : label);
      if (m.status === "dropped") tag.title = "The customer or conversation was gone before it could be sent.";
      status.appendChild(tag);
      const conv = el("td", "mono");
      if (m.conversation_id) {
        const a = el("a", "", m.conversation_id);
        a.href = `#/conversations/${encodeURIComponent(m.conversation_id)}`;
        conv.appendChild(a);
      } else conv.textContent = "—";
      const cell = (v) => {
        const td = el("td", "nowrap", v ? when(v) : "—");
        if (v) td.title = whenFull(v);
        return td;
      };
      const waiting = m.status === "pending" || m.status === "sending";
      const tr = el("tr");
      rows.appendChild(tr);
      tr.append(
        el("td", "num", m.id), el("td", "", MAIL_KINDS[m.kind] || m.kind), status,
        el("td", "num", m.attempts), cell(waiting ? m.next_attempt_at : null),
        el("td", "mono", m.last_error || "—"), conv, cell(m.created_at), cell(m.sent_at));
    }
    const total = data.total || 0;
    $("mail-range").textContent = mails.length
      ? `${offset + 1}–${offset + mails.length} of ${total}, newest first` : offset ? "Nothing on this page" : "";
    $("mail-prev").disabled = offset <= 0;
    $("mail-next").disabled = offset + mails.length >= total;
  }
  $("mail-prev").addEventListener("click", () => go(`#/mail?offset=${Math.max(0, mailState.offset - PAGE)}`));
  $("mail-next").addEventListener("click", () => go(`#/mail?offset=${mailState.offset + PAGE}`));

  ui.tabConv.addEventListener("click", (ev) => {
    // Coming back to the list keeps the last search.
    ev.preventDefault();
    go(lastListHash);
  });

  window.addEventListener("hashchange", route);
  route();
})();
