// The lists of identities: pending acknowledgements, failed ones and recent changes
// (holds), from GET /v1/identities?state=…&limit=N&cursor=C&q=TEXT.  One row a user,
// <tr data-wa-id="…">, kept while its data is unchanged; refreshed by the app's poll.

import { el, code, txt, when, badge, KeyedRows, serialized } from "./dom.js";
import * as api from "./api.js";
import { session, userLink, idOf, ackDialog, releaseDialog, retryAllDialog, holdReleasedText } from "./shared.js";

const PAGE = 50;

const KINDS = {
  pending: {
    title: "Pending acknowledgements",
    intro: "Users whose identity changed and whose new key nobody acknowledged yet: the gate refuses " +
           "sends to them. Verify the person another way, then acknowledge.",
    empty: "No acknowledgement is pending.",
  },
  failed: {
    title: "Failed acknowledgements",
    intro: "Acknowledgements waguard gave up on (the WABA client refused or did not answer). The gate " +
           "stays closed for them until one succeeds.",
    empty: "No acknowledgement is failed.",
  },
  held: {
    title: "Recent identity changes (holds)",
    intro: "Users whose newest identity change is recent: sensitive categories of sends ([hold]) are " +
           "refused for a while after a change, acknowledged or not. Release a hold when you know the " +
           "person is who they say.",
    empty: "No recent identity change.",
  },
};

function stateBadge(s) {
  const kind = s === "acknowledged" ? "ok" : s === "failed" ? "bad" : s === "pending" || s === "queued" ? "warn" : "muted";
  return badge(txt(s), kind);
}

function nameCell(it) {
  return it.name === null || it.name === undefined || it.name === ""
    ? el("span", { class: "none", text: "no profile name" })
    : el("span", { class: "profile-name", text: String(it.name) });
}

function userCell(it) {
  const id = idOf(it);
  return el("div", { class: "user-cell" },
    userLink(id),
    it.user_id && it.user_id !== id ? el("div", { class: "sub" }, "user id ", code(it.user_id)) : null);
}

function hashCell(it) {
  // hash_unknown: WhatsApp said the identity changed, and the new hash is not known yet;
  // the hash on record is the old one.
  if (it.state === "hash_unknown") {
    return el("div", { class: "hashes" },
      el("div", null, el("span", { class: "sub", text: "old " }), code(it.hash, "hash old-hash")),
      el("div", null, el("span", { class: "sub", text: "new " }),
         el("span", { class: "new-hash unknown", text: "not known yet" })));
  }
  return el("div", { class: "hashes" },
    el("div", null, el("span", { class: "sub", text: "old " }), code(it.old_hash, "hash old-hash")),
    el("div", null, el("span", { class: "sub", text: "new " }), code(it.hash, "hash new-hash")));
}

function columns(kind) {
  const cols = [
    ["Profile name", nameCell],
    ["User", userCell],
  ];
  if (kind === "held") {
    cols.push(["Hash", (it) => code(it.hash, "hash new-hash")],
              ["Changed", (it) => when(it.changed_at)],
              ["State", (it) => stateBadge(it.state)],
              ["Hold", (it) => it.hold_released ? badge(holdReleasedText(it.hold_released), "ok") : badge("held", "warn")]);
  } else {
    cols.push(["Identity (old → new)", hashCell],
              ["Since", (it) => when(it.since || it.changed_at)],
              ["Attempts", (it) => el("span", { class: "num", text: String(it.attempts ?? 0) })],
              ["Last error", (it) => it.last_error ? el("span", { class: "error-text", text: String(it.last_error) })
                                                   : el("span", { class: "none", text: "—" })],
              ["State", (it) => el("div", null, stateBadge(it.state),
                                   it.next_attempt ? el("div", { class: "sub" }, "next try ", when(it.next_attempt)) : null,
                                   it.leased_until ? el("div", { class: "sub", text: "being sent" }) : null)]);
  }
  return cols;
}

export function listView(kind) {
  const K = KINDS[kind];
  let root, rows, empty, errorLine, pager, prev, next, pageNo, search, searchInput, alive = false;
  let q = "", cursors = [""], nextCursor = null;

  function actions(it) {
    const id = idOf(it);
    const td = el("td", { class: "actions" });
    if (!session.canAct || id === null || id === undefined) return td;
    const refresh = () => load();
    if (kind === "pending") {
      td.appendChild(el("button", { type: "button", class: "act", text: "Acknowledge", data: { action: "ack" },
                                    attrs: { "aria-label": "Acknowledge " + id },
                                    on: { click: () => ackDialog(id, it, refresh) } }));
    } else if (kind === "failed") {
      td.appendChild(el("button", { type: "button", class: "act", text: "Retry", data: { action: "retry" },
                                    attrs: { "aria-label": "Retry " + id },
                                    on: { click: () => ackDialog(id, it, refresh, true) } }));
    } else if (kind === "held") {
      td.appendChild(el("button", { type: "button", class: "act", text: "Release", data: { action: "release" },
                                    attrs: { "aria-label": "Release the hold of " + id },
                                    on: { click: () => releaseDialog(id, it, refresh) } }));
    }
    return td;
  }

  const cols = columns(kind);
  function buildRow(it) {
    const tr = el("tr", { data: { waId: idOf(it), state: it.state } });
    for (const [, f] of cols) tr.appendChild(el("td", null, f(it)));
    tr.appendChild(actions(it));
    return tr;
  }

  const load = serialized(async () => {
    if (!alive) return;
    const cursor = cursors[cursors.length - 1];
    const r = await api.get("/v1/identities" + api.query({ state: kind, limit: PAGE, cursor, q }));
    if (!alive) return;
    if (!r.ok) {
      errorLine.textContent = "Could not load the list: " + r.error;
      errorLine.hidden = false;
      return;
    }
    errorLine.hidden = true;
    const items = Array.isArray(r.data.identities) ? r.data.identities : [];
    rows.update(items, idOf, String(session.canAct));
    empty.hidden = items.length > 0;
    empty.textContent = q ? `Nothing matches “${q}”.` : K.empty;
    nextCursor = r.data.next_cursor || null;
    next.disabled = !nextCursor;
    prev.disabled = cursors.length <= 1;
    pageNo.textContent = "Page " + cursors.length;
    pager.hidden = !nextCursor && cursors.length <= 1;
    root.dataset.loaded = "1";
  });

  return {
    id: kind,
    title: K.title,
    mount(container) {
      alive = true;
      cursors = [""];
      const tbody = el("tbody");
      rows = new KeyedRows(tbody, buildRow);
      searchInput = el("input", { type: "search", name: "q", id: kind + "-q", autocomplete: "off", spellcheck: false,
                                  placeholder: "profile name, wa_id or user id", value: q,
                                  maxLength: 135 });
      search = el("form", { class: "search", attrs: { role: "search" }, on: { submit: (e) => {
        e.preventDefault();
        q = searchInput.value.trim();
        cursors = [""];
        load();
      } } },
        el("label", { htmlFor: searchInput.id, text: "Search" }), searchInput,
        el("button", { type: "submit", text: "Search" }),
        el("button", { type: "button", class: "link", text: "Clear", on: { click: () => {
          searchInput.value = ""; q = ""; cursors = [""]; load();
        } } }));
      const tools = [search];
      if (kind === "failed" && session.canAct) {
        tools.push(el("button", { type: "button", class: ["act", "retry-all"], name: "retry-all", text: "Retry all…",
                                  data: { action: "retry-all" }, on: { click: () => retryAllDialog(() => load()) } }));
      }
      if (!session.canAct) tools.push(el("p", { class: "readonly-note", text: "Read-only: an api token sees, an admin token acts." }));
      empty = el("p", { class: "empty", hidden: true, text: K.empty });
      errorLine = el("p", { class: "load-error", hidden: true, attrs: { role: "alert" } });
      prev = el("button", { type: "button", text: "← Previous", disabled: true, on: { click: () => {
        if (cursors.length > 1) { cursors.pop(); load(); }
      } } });
      next = el("button", { type: "button", text: "Next →", disabled: true, on: { click: () => {
        if (nextCursor) { cursors.push(nextCursor); load(); }
      } } });
      pageNo = el("span", { class: "page-no", text: "Page 1" });
      pager = el("nav", { class: "pager", hidden: true, attrs: { "aria-label": "Pages" } }, prev, pageNo, next);
      const head = el("tr", null, cols.map(([t]) => el("th", { scope: "col", text: t })),
                      el("th", { scope: "col", class: "actions", text: session.canAct ? "Act" : "" }));
      root = el("div", { class: ["view", "view-list", "view-" + kind] },
        el("div", { class: "view-head" }, el("h1", { text: K.title })),
        el("p", { class: "intro", text: K.intro }),
        el("div", { class: "toolbar" }, tools),
        errorLine,
        el("div", { class: "table-wrap" },
          el("table", { class: ["grid", "identities"], id: kind + "-table" },
            el("caption", { class: "visually-hidden", text: K.title }), el("thead", null, head), tbody)),
        empty, pager);
      container.appendChild(root);
      return load();
    },
    refresh: () => load(),
    unmount() { alive = false; root = null; },
  };
}
