// DOM building for the console.  Everything the console shows comes from webhooks and is
// attacker-controlled (a WhatsApp profile name may be "<img src=x onerror=…>"), so the
// page is built with createElement and textContent only: no innerHTML, no HTML strings.

const PROPS = new Set(["type", "name", "value", "id", "htmlFor", "disabled", "required", "checked",
                       "placeholder", "autocomplete", "spellcheck", "rows", "maxLength", "hidden",
                       "title", "colSpan", "scope", "open", "noValidate", "tabIndex"]);

// el("button", {class: "x", text: "Go", on: {click: f}, data: {waId: "1"}, attrs: {...}}, ...children)
// children: nodes, strings (text nodes), null/undefined/false (skipped) or arrays of those.
export function el(tag, opts, ...children) {
  const node = document.createElement(tag);
  if (opts) {
    for (const [k, v] of Object.entries(opts)) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
      else if (k === "text") node.textContent = String(v);
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) { if (dv !== undefined && dv !== null) node.dataset[dk] = String(dv); }
      else if (k === "attrs") for (const [ak, av] of Object.entries(v)) { if (av !== undefined && av !== null && av !== false) node.setAttribute(ak, av === true ? "" : String(av)); }
      else if (k === "href") node.setAttribute("href", safeHref(v));
      else if (PROPS.has(k)) node[k] = v;
      else throw new Error("el: unknown option " + k);
    }
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else if (c instanceof Node) node.appendChild(c);
    else node.appendChild(document.createTextNode(String(c)));
  }
  return node;
}

// Only links inside the console (hash routes) are ever built.
function safeHref(v) {
  const s = String(v);
  return s.startsWith("#") ? s : "#";
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function replaceChildren(node, ...children) {
  clear(node);
  return append(node, children);
}

// A value shown as text, with a dash for "none".
export function txt(v) {
  if (v === null || v === undefined || v === "") return "—";
  return String(v);
}

export function code(v, cls) {
  if (v === null || v === undefined || v === "") return el("span", { class: "none", text: "—" });
  return el("code", { class: cls, text: String(v) });
}

const pad = (n) => String(n).padStart(2, "0");

export function fmtDate(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
  if (s < 86400) return Math.floor(s / 3600) + " h " + (Math.floor(s / 60) % 60) + " min";
  return Math.floor(s / 86400) + " d " + (Math.floor(s / 3600) % 24) + " h";
}

export function relative(ms, now = Date.now()) {
  const d = Math.round((now - ms) / 1000);
  if (Math.abs(d) < 5) return "just now";
  return d > 0 ? fmtDuration(d) + " ago" : "in " + fmtDuration(-d);
}

// A point in time (seconds or milliseconds since the epoch): a <time> showing how long
// ago, kept current by tickTimes(), with the date itself as its title.
export function when(t, unit = "s") {
  if (t === null || t === undefined || t === 0 || t === "") return el("span", { class: "none", text: "—" });
  const ms = unit === "ms" ? Number(t) : Number(t) * 1000;
  if (!Number.isFinite(ms)) return el("span", { text: String(t) });
  const node = el("time", { class: "rel", title: fmtDate(ms), attrs: { datetime: new Date(ms).toISOString() },
                            data: { ms: ms }, text: relative(ms) });
  return node;
}

// A date written out, with how long ago as a second line.
export function dateCell(t, unit = "s") {
  if (t === null || t === undefined || t === 0 || t === "") return el("span", { class: "none", text: "—" });
  const ms = unit === "ms" ? Number(t) : Number(t) * 1000;
  return el("span", { class: "date" }, el("span", { text: fmtDate(ms) }), " ", when(ms, "ms"));
}

export function tickTimes(root = document) {
  const now = Date.now();
  for (const t of root.querySelectorAll("time.rel[data-ms]")) {
    const s = relative(Number(t.dataset.ms), now);
    if (t.textContent !== s) t.textContent = s;
  }
}

// <dl> from [[term, value node or text], …]; rows whose value is undefined are left out.
export function defs(rows, cls) {
  const dl = el("dl", { class: ["defs", cls] });
  for (const [k, v] of rows) {
    if (v === undefined) continue;
    dl.appendChild(el("dt", { text: k }));
    dl.appendChild(el("dd", null, v instanceof Node ? v : txt(v)));
  }
  return dl;
}

export function badge(text, kind) {
  return el("span", { class: ["badge", kind && "badge-" + kind], text });
}

// A keyed table body: rows are kept (same element) while their data is unchanged, so
// a live refresh does not pull a button away from under the operator's pointer.
export class KeyedRows {
  constructor(tbody, build) {
    this.tbody = tbody;
    this.build = build;           // (item) → <tr>
    this.rows = new Map();        // key → {sig, tr}
  }

  update(items, keyOf, extraSig = "") {
    const next = new Map();
    const order = [];
    for (const it of items) {
      const key = keyOf(it);
      if (next.has(key)) continue;
      const sig = JSON.stringify(it) + "|" + extraSig;
      const old = this.rows.get(key);
      let tr;
      if (old && old.sig === sig) tr = old.tr;
      else {
        tr = this.build(it);
        if (old) old.tr.replaceWith(tr);
      }
      next.set(key, { sig, tr });
      order.push(tr);
    }
    for (const [key, v] of this.rows) if (!next.has(key)) v.tr.remove();
    this.rows = next;
    // Put the rows in order, moving only those out of place.
    let at = this.tbody.firstChild;
    for (const tr of order) {
      if (at === tr) { at = at.nextSibling; continue; }
      this.tbody.insertBefore(tr, at);
    }
    while (at) { const n = at.nextSibling; at.remove(); at = n; }
  }

  get size() { return this.rows.size; }
}

// fn made to run one at a time: a call while it runs runs it once more afterwards (with
// the state as it is then), and every caller waits for that last run.
export function serialized(fn) {
  let running = null, again = false;
  return function run() {
    if (running) { again = true; return running; }
    running = (async () => {
      try {
        do { again = false; await fn(); } while (again);
      } finally { running = null; }
    })();
    return running;
  };
}
