/* Chat embed: <script src="https://chat.example.com/widget.js" async data-position="right"
   data-color="#2357d9" data-title="Chat with us"></script>
   Adds a launcher and, on click, an iframe with the chat. Sets no cookie. While a conversation is
   open (so after consent) it keeps localStorage "chat-widget" = "open", no identifier: the next
   page then loads the chat behind the closed launcher to count new replies. Without it, nothing
   is asked of the chat server before a click. Styles go through element.style (strict CSP). */
(function () {
  'use strict';
  if (window.__chatWidget) return;
  window.__chatWidget = true;
  var script = document.currentScript ||
    [].slice.call(document.scripts).reverse().filter(function (s) { return /\/widget\.js(\?|$)/.test(s.src); })[0];
  if (!script) return;
  var origin = new URL(script.src, location.href).origin;
  var ds = script.dataset;
  var side = ds.position === 'left' ? 'left' : 'right';
  var DEFAULT = '#2357d9', DARK = '#1b1f24';
  var color = /^#[0-9a-f]{6}$/i.test(ds.color || '') ? ds.color.toLowerCase() : DEFAULT;
  var title = (ds.title || 'Chat with us').slice(0, 60);
  // WCAG contrast, as the server computes it for the frame (chatserver/web/widget.py).
  function lum(hex) {
    var n = parseInt(hex.slice(1), 16), w = [0.2126, 0.7152, 0.0722], sum = 0;
    for (var i = 0; i < 3; i++) {
      var c = (n >> (16 - 8 * i) & 255) / 255;
      sum += w[i] * (c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4));
    }
    return sum;
  }
  function ratio(a, b) {
    var x = lum(a), y = lum(b);
    return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
  }
  if (Math.max(ratio(color, '#ffffff'), ratio(color, DARK)) < 4.5) {
    if (ds.color) console.warn('Chat widget: data-color ' + ds.color + ' leaves text unreadable (under 4.5:1 with white and dark); using ' + DEFAULT);
    color = DEFAULT;
  }
  var ink = ratio(color, '#ffffff') >= ratio(color, DARK) ? '#fff' : DARK;
  var Z = '2147483000';
  // Narrow or short (a phone, or a desktop zoomed to 200% and more): the chat takes the window.
  var small = window.matchMedia('(max-width: 480px), (max-height: 520px)');
  var open = false, frame = null, loaded = false, unread = 0;
  var MARK = 'chat-widget';
  function marked() {
    try { return window.localStorage.getItem(MARK) === 'open'; } catch (e) { return false; }
  }
  function mark(on) {
    try {
      if (on) window.localStorage.setItem(MARK, 'open'); else window.localStorage.removeItem(MARK);
    } catch (e) { /* storage blocked: wait for a click */ }
  }

  function css(el, props) {
    el.style.all = 'initial';
    for (var k in props) el.style.setProperty(k, props[k]);
    return el;
  }
  function svg(d) {
    var ns = 'http://www.w3.org/2000/svg';
    var s = document.createElementNS(ns, 'svg');
    var a = { viewBox: '0 0 24 24', width: 28, height: 28, 'aria-hidden': 'true', focusable: 'false' };
    for (var k in a) s.setAttribute(k, a[k]);
    var p = document.createElementNS(ns, 'path');
    p.setAttribute('d', d);
    p.setAttribute('fill', 'currentColor');
    s.appendChild(p);
    return s;
  }
  var chatIcon = svg('M12 3C6.5 3 2 6.9 2 11.7c0 2.5 1.2 4.7 3.1 6.3L4.3 21.5a.5.5 0 0 0 .7.6l4.1-2a11 11 0 0 0 2.9.4c5.5 0 10-3.9 10-8.8S17.5 3 12 3z');
  var closeIcon = svg('M6.7 8.1a1 1 0 0 1 1.4-1.4L12 10.6l3.9-3.9a1 1 0 1 1 1.4 1.4L13.4 12l3.9 3.9a1 1 0 0 1-1.4 1.4L12 13.4l-3.9 3.9a1 1 0 0 1-1.4-1.4l3.9-3.9z');

  var btn = css(document.createElement('button'), {
    position: 'fixed', bottom: '20px', width: '58px', height: '58px', 'border-radius': '50%',
    background: color, color: ink, cursor: 'pointer', display: 'flex', 'align-items': 'center',
    'justify-content': 'center', 'box-shadow': '0 6px 20px rgba(0,0,0,.22)', 'z-index': Z,
    transition: 'transform .15s ease'
  });
  btn.style.setProperty(side, '20px');
  btn.type = 'button';
  btn.setAttribute('aria-haspopup', 'dialog');
  btn.appendChild(chatIcon);
  var badge = css(document.createElement('span'), {
    position: 'absolute', top: '-4px', right: '-4px', 'min-width': '20px', height: '20px',
    padding: '0 5px', 'box-sizing': 'border-box', 'border-radius': '10px', background: '#d92d20',
    color: '#fff', font: '700 12px/20px system-ui,-apple-system,"Segoe UI",Roboto,sans-serif',
    'text-align': 'center', display: 'none', 'box-shadow': '0 0 0 2px #fff'
  });
  badge.setAttribute('aria-hidden', 'true');
  btn.appendChild(badge);
  // Announces new replies while closed (the badge is aria-hidden).
  var live = css(document.createElement('div'), {
    position: 'fixed', width: '1px', height: '1px', overflow: 'hidden', clip: 'rect(0 0 0 0)',
    'white-space': 'nowrap'
  });
  live.setAttribute('role', 'status');
  live.setAttribute('aria-live', 'polite');
  btn.onmouseenter = function () { btn.style.transform = 'scale(1.06)'; };
  btn.onmouseleave = function () { btn.style.transform = ''; };

  var panel = css(document.createElement('div'), {
    position: 'fixed', 'z-index': Z, overflow: 'hidden', background: '#fff', display: 'none',
    'box-shadow': '0 12px 48px rgba(0,0,0,.25)'
  });
  panel.id = 'chat-widget-panel';
  panel.setAttribute('role', 'dialog');
  panel.setAttribute('aria-label', title);
  btn.setAttribute('aria-controls', panel.id);

  function layout() {
    var s = panel.style, full = small.matches;
    s.top = full ? '0' : 'auto';
    s.bottom = full ? '0' : '92px';
    s.left = s.right = 'auto';
    s.setProperty(side, full ? '0' : '20px');
    s.width = full ? '100%' : '370px';
    s.height = full ? '100%' : '560px';
    s.maxHeight = full ? '100%' : 'calc(100vh - 112px)';
    s.borderRadius = full ? '0' : '16px';
    btn.style.display = open && full ? 'none' : 'flex';
    // Full screen, the chat is a modal dialog: the frame keeps Tab inside itself.
    if (open && full) panel.setAttribute('aria-modal', 'true'); else panel.removeAttribute('aria-modal');
    tell();
  }
  function label() {
    btn.setAttribute('aria-expanded', String(open));
    btn.setAttribute('aria-label', (open ? 'Close chat' : 'Open chat') +
      (unread ? ' (' + unread + ' unread ' + (unread === 1 ? 'message' : 'messages') + ')' : ''));
    badge.textContent = unread > 99 ? '99+' : String(unread);
    badge.style.display = unread && !open ? 'block' : 'none';
  }
  function tell() {
    if (loaded) frame.contentWindow.postMessage({ type: 'chat:visible', open: open, modal: open && small.matches }, origin);
  }
  function load(shown) {
    frame = document.createElement('iframe');
    css(frame, { border: '0', width: '100%', height: '100%', display: 'block' });
    frame.title = title;
    var query = { title: title, color: color };
    if (!shown) query.shown = '0';
    frame.src = origin + '/widget?' + new URLSearchParams(query);
    frame.onload = function () { loaded = true; tell(); };
    panel.appendChild(frame);
  }
  function toggle(show) {
    open = show;
    if (open && !frame) load(true);
    panel.style.display = open ? 'block' : 'none';
    btn.replaceChild(open ? closeIcon : chatIcon, open ? chatIcon : closeIcon);
    if (open) unread = 0;
    layout();
    label();
    if (open) frame.focus(); else btn.focus();
  }
  btn.onclick = function () { toggle(!open); };
  btn.onkeydown = function (e) {
    if (e.key === 'Escape' && open) { e.preventDefault(); toggle(false); }
  };
  // Should focus still reach the page behind the full-screen chat, it goes back to the chat.
  document.addEventListener('focusin', function (e) {
    if (open && small.matches && !panel.contains(e.target)) frame.focus();
  }, true);

  window.addEventListener('message', function (e) {
    if (e.origin !== origin || !frame || e.source !== frame.contentWindow || !e.data) return;
    if (e.data.type === 'chat:close' && open) toggle(false);
    if (e.data.type === 'chat:unread') {
      var n = parseInt(e.data.count, 10);
      n = n > 0 ? n : 0;
      if (n > unread && !open) {
        live.textContent = n + ' unread ' + (n === 1 ? 'message' : 'messages') + ' in the chat';
      }
      if (!n) live.textContent = '';
      unread = n;
      label();
    }
    if (e.data.type === 'chat:active') mark(e.data.open === true);
  });
  if (small.addEventListener) small.addEventListener('change', layout);

  function mount() {
    document.body.appendChild(panel);
    document.body.appendChild(btn);
    document.body.appendChild(live);
    layout();
    label();
    // A conversation was open on an earlier page: reconnect, panel closed.
    if (marked() && !frame) load(false);
  }
  if (document.body) mount(); else document.addEventListener('DOMContentLoaded', mount);
})();
