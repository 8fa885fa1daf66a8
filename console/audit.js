// The audit log: GET /v1/audit?cursor=C&limit=N&q=TEXT[&wa_id=W], newest first, paged
// and searchable; the current page is refreshed by the app's poll.

import { el, code, txt, dateCell, badge, KeyedRows, serialized } from "./dom.js";
import * as api from "./api.js";
import { userLink } from "./shared.js";

const PAGE = 50;

function resultBadge(r) {
  const s = String(r ?? "");
  const kind = s === "acknowledged" || s.startsWith("hold_released") ? "ok"
    : /fail|refus|error/.test(s) ? "bad" : s === "requested" ? "warn" : "muted";
  return badge(txt(r), kind);
}

export function auditView() {
  let root, rows, empty, errorLine, pager, prev, next, pageNo, qInput, wInput, alive = false;
  let q = "", who = "", cursors = [""], nextCursor = null;

  function buildRow(e) {
    return el("tr", { data: { auditId: e.id, waId: e.wa_id } },
      el("td", null, dateCell(e.at)),
      el("td", null, userLink(e.wa_id)),
      el("td", { class: "who", text: txt(e.who) }),
      el("td", null, resultBadge(e.result)),
      el("td", { class: "reason", text: txt(e.reason) }),
      el("td", null, code(e.hash, "hash")));
  }

  const load = serialized(async () => {
    if (!alive) return;
    const r = await api.get("/v1/audit" + api.query({ limit: PAGE, cursor: cursors[cursors.length - 1], q, wa_id: who }));
    if (!alive) return;
    if (!r.ok) {
      errorLine.textContent = "Could not load the audit log: " + r.error;
      errorLine.hidden = false;
      return;
    }
    errorLine.hidden = true;
    const entries = Array.isArray(r.data.entries) ? r.data.entries : [];
    rows.update(entries, (e) => e.id);
    empty.hidden = entries.length > 0;
    empty.textContent = q || who ? "No audit entry matches." : "The audit log is empty.";
    nextCursor = r.data.next_cursor || null;
    next.disabled = !nextCursor;
    prev.disabled = cursors.length <= 1;
    pageNo.textContent = "Page " + cursors.length;
    pager.hidden = !nextCursor && cursors.length <= 1;
    root.dataset.loaded = "1";
  });

  return {
    id: "audit",
    title: "Audit log",
    // arg: the hash route's query ("wa_id=…&q=…"), from a user's page.
    mount(container, arg) {
      alive = true;
      cursors = [""];
      const params = new URLSearchParams(arg || "");
      if (arg !== undefined) { q = params.get("q") || ""; who = params.get("wa_id") || ""; }
      const tbody = el("tbody");
      rows = new KeyedRows(tbody, buildRow);
      qInput = el("input", { type: "search", name: "q", id: "audit-q", value: q, autocomplete: "off", spellcheck: false,
                             placeholder: "who, result, reason, wa_id", maxLength: 255 });
      wInput = el("input", { type: "search", name: "wa_id", id: "audit-wa-id", value: who, autocomplete: "off",
                             spellcheck: false, placeholder: "wa_id, +number or user id", maxLength: 135 });
      const form = el("form", { class: "search", attrs: { role: "search" }, on: { submit: (e) => {
        e.preventDefault();
        q = qInput.value.trim();
        who = wInput.value.trim();
        cursors = [""];
        load();
      } } },
        el("label", { htmlFor: "audit-q", text: "Search" }), qInput,
        el("label", { htmlFor: "audit-wa-id", text: "User" }), wInput,
        el("button", { type: "submit", text: "Search" }),
        el("button", { type: "button", class: "link", text: "Clear", on: { click: () => {
          qInput.value = ""; wInput.value = ""; q = ""; who = ""; cursors = [""]; load();
        } } }));
      empty = el("p", { class: "empty", hidden: true });
      errorLine = el("p", { class: "load-error", hidden: true, attrs: { role: "alert" } });
      prev = el("button", { type: "button", text: "← Newer", disabled: true, on: { click: () => {
        if (cursors.length > 1) { cursors.pop(); load(); }
      } } });
      next = el("button", { type: "button", text: "Older →", disabled: true, on: { click: () => {
        if (nextCursor) { cursors.push(nextCursor); load(); }
      } } });
      pageNo = el("span", { class: "page-no", text: "Page 1" });
      pager = el("nav", { class: "pager", hidden: true, attrs: { "aria-label": "Pages" } }, prev, pageNo, next);
      root = el("div", { class: "view view-audit" },
        el("div", { class: "view-head" }, el("h1", { text: "Audit log" })),
        el("p", { class: "intro", text: "Every operator act and every acknowledgement waguard made, newest first, " +
                                        "with the token's name (never the token)." }),
        el("div", { class: "toolbar" }, form),
        errorLine,
        el("div", { class: "table-wrap" },
          el("table", { class: ["grid", "audit"], id: "audit-table" },
            el("caption", { class: "visually-hidden", text: "Audit log" }),
            el("thead", null, el("tr", null, ["At", "User", "Who", "Result", "Reason or answer", "Hash"]
              .map((h) => el("th", { scope: "col", text: h })))),
            tbody)),
        empty, pager);
      container.appendChild(root);
      return load();
    },
    refresh: () => load(),
    unmount() { alive = false; root = null; },
  };
}
