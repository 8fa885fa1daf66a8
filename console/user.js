// A user's page (#user/<wa_id, +number, dialled number or user id>): the record
// (GET /v1/identities/{id}), the hash history, every acknowledgement attempt, the user's
// audit trail (GET /v1/audit?wa_id=), the gate's decisions (GET /v1/gate/{id}) and the
// acts: acknowledge, release a hold.  Refreshed by the app's poll when something changed.

import { el, code, txt, defs, badge, when, dateCell, serialized } from "./dom.js";
import * as api from "./api.js";
import { session, userLink, userHref, ackDialog, releaseDialog, holdReleasedText } from "./shared.js";

const AUDIT_PAGE = 50;

function table(cls, headers, rows, emptyText) {
  if (!rows.length) return el("p", { class: "empty", text: emptyText });
  return el("div", { class: "table-wrap" },
    el("table", { class: ["grid", cls] },
      el("thead", null, el("tr", null, headers.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", null, rows)));
}

function yesNo(v, yes = "yes", no = "no") {
  return v === true ? badge(yes, "ok") : v === false ? badge(no, "muted") : el("span", { class: "none", text: "—" });
}

function decisionRow(label, number, r) {
  if (!r) return null;
  if (r.status !== 200 && r.status !== 423) {
    return el("tr", { data: { gateType: label, number } },
      el("td", { text: label }), el("td", null, number ? code(number) : el("span", { class: "none", text: "default" })),
      el("td", { colSpan: 3 }, el("span", { class: "error-text", text: r.error })));
  }
  const d = r.data || {};
  const reasons = Array.isArray(d.reasons) ? d.reasons : [];
  return el("tr", { data: { gateType: label, number, allowed: String(!!d.allowed) } },
    el("td", { text: label }),
    el("td", null, number ? code(number) : el("span", { class: "none", text: "default" })),
    el("td", null, d.allowed ? badge("allowed", "ok") : badge("refused", "bad")),
    el("td", null, reasons.length ? reasons.map((x) => badge(String(x), "warn")) : el("span", { class: "none", text: "—" })),
    el("td", null, d.hold_until ? dateCell(d.hold_until) : el("span", { class: "none", text: "—" })));
}

export function userView() {
  let root, body, input = "", alive = false, lastSig = "", auditCursors = [""];

  const load = serialized(async () => {
    if (!alive) return;
    const rec = await api.get("/v1/identities/" + api.enc(input));
    if (!alive) return;
    if (rec.status === 401) return;
    if (!rec.ok) {
      const sig = JSON.stringify([rec.status, rec.data]);
      if (sig === lastSig) return;
      lastSig = sig;
      body.replaceChildren(problem(rec));
      root.dataset.loaded = "1";
      return;
    }
    const u = rec.data;
    const id = u.wa_id || u.user_id || input;
    const numbers = session.overview && session.overview.identity_check ? Object.keys(session.overview.identity_check) : [];
    const gateCalls = [["template", null], ["text", null], ...numbers.map((n) => ["template", n])];
    const [audit, ...gates] = await Promise.all([
      api.get("/v1/audit" + api.query({ wa_id: id, limit: AUDIT_PAGE, cursor: auditCursors[auditCursors.length - 1] })),
      ...gateCalls.map(([t, n]) => api.get("/v1/gate/" + api.enc(id) + api.query({ type: t, phone_number_id: n }))),
    ]);
    if (!alive) return;
    const sig = JSON.stringify([u, audit.status, audit.data, gates.map((g) => [g.status, g.data]), session.canAct]);
    if (sig === lastSig) return;
    lastSig = sig;
    body.replaceChildren(...page(u, id, audit, gates, gateCalls));
    root.dataset.loaded = "1";
  });

  function problem(r) {
    const box = el("div", { class: "panel problem", attrs: { role: "alert" } });
    if (r.status === 404) {
      box.append(el("h2", { text: "No such user" }), el("p", { class: "error-text", text: r.error }));
    } else if (r.status === 409) {
      const considered = r.data && Array.isArray(r.data.considered) ? r.data.considered : [];
      box.append(el("h2", { text: "This names more than one user" }),
        el("p", { class: "error-text", text: r.error }),
        el("ul", { class: "considered" }, considered.map((w) => el("li", null, userLink(w)))));
    } else {
      box.append(el("h2", { text: "Cannot show this user" }), el("p", { class: "error-text", text: r.error }));
    }
    return box;
  }

  function page(u, id, audit, gates, gateCalls) {
    const ident = u.identity;
    const refresh = () => { lastSig = ""; load(); };
    const acts = el("div", { class: "user-acts" });
    if (session.canAct) {
      if (ident && ident.state !== "acknowledged") {
        acts.appendChild(el("button", { type: "button", class: "act", data: { action: "ack" },
          text: ident.state === "failed" ? "Retry acknowledgement" : "Acknowledge",
          on: { click: () => ackDialog(id, { name: u.name, hash: ident.hash, state: ident.state, attempts: ident.attempts,
                                              last_error: ident.last_error }, refresh, ident.state === "failed") } }));
      }
      if (ident && ident.changed_at) {
        acts.appendChild(el("button", { type: "button", class: "act", data: { action: "release" }, text: "Release hold…",
          on: { click: () => releaseDialog(id, { name: u.name, hash: ident.hash, hold_released: ident.hold_released }, refresh) } }));
      }
    } else {
      acts.appendChild(el("p", { class: "readonly-note", text: "Read-only: an api token sees, an admin token acts." }));
    }

    const head = el("div", { class: "view-head user-head" },
      el("h1", null, u.name ? el("span", { class: "profile-name", text: String(u.name) })
                            : el("span", { text: String(id) })),
      el("p", { class: "sub" }, "wa_id ", code(u.wa_id), u.user_id ? [" · user id ", code(u.user_id)] : null),
      acts);

    const record = el("section", { class: "panel" }, el("h2", { text: "Record" }), defs([
      ["wa_id", code(u.wa_id)],
      ["Profile name", u.name ? el("span", { class: "profile-name", text: String(u.name) }) : null],
      ["User id", code(u.user_id)],
      ["Parent user id", u.parent_user_id ? code(u.parent_user_id) : undefined],
      ["Last inbound message", when(u.last_inbound)],
      ["Blocked", yesNo(u.blocked, "blocked", "no")],
      ["Moved to", u.moved_to ? userLink(u.moved_to) : undefined],
      ["Contact check", u.contact ? String(u.contact) : undefined],
    ]));

    const identity = el("section", { class: "panel identity" }, el("h2", { text: "Identity" }),
      ident ? defs([
        [ident.state === "hash_unknown" ? "Hash on record (old)" : "Hash", code(ident.hash, "hash")],
        ["New hash", ident.state === "hash_unknown"
          ? el("span", { class: "unknown", text: "not known yet: WhatsApp said the identity changed; the new hash comes with the user's next message" })
          : undefined],
        ["State", badge(txt(ident.state), ident.state === "acknowledged" ? "ok" : ident.state === "failed" ? "bad" : "warn")],
        ["Created (WhatsApp)", dateCell(ident.created_timestamp)],
        ["Changed (seen here)", dateCell(ident.changed_at)],
        ["Pending since", ident.pending_since ? dateCell(ident.pending_since) : undefined],
        ["Attempts", String(ident.attempts ?? 0)],
        ["Last error", ident.last_error ? el("span", { class: "error-text", text: String(ident.last_error) }) : undefined],
        ["Acknowledged by", ident.acknowledged_by ? String(ident.acknowledged_by) : undefined],
        ["Acknowledged at", ident.acknowledged_at ? dateCell(ident.acknowledged_at) : undefined],
        ["Requested by", ident.requested_by ? String(ident.requested_by) : undefined],
        ["Next attempt", ident.next_attempt ? when(ident.next_attempt) : undefined],
        ["Being sent until", ident.leased_until ? when(ident.leased_until) : undefined],
        ["Hold", ident.hold_released ? badge(holdReleasedText(ident.hold_released), "ok") : undefined],
        ["Time believed", ident.time_believed === false ? "no: the change's time came from waguard's clock" : undefined],
      ]) : el("p", { class: "empty", text: "No identity is recorded for this user." }));

    const decisions = el("section", { class: "panel decisions" }, el("h2", { text: "The gate's decisions" }),
      table("gate", ["Send type", "Business number", "Decision", "Reasons", "Hold until"],
            gates.map((g, i) => decisionRow(gateCalls[i][0], gateCalls[i][1], g)).filter(Boolean), "No decision."),
      el("p", { class: "hint", text: "Decisions without a [hold] category: a held category may still refuse a " +
                                     "template of its own while a hold runs." }));

    const history = el("section", { class: "panel" }, el("h2", { text: "Hash history" }),
      table("history", ["Hash", "Created (WhatsApp)", "Received", "Source", "Acknowledged", "Message"],
        (Array.isArray(u.history) ? u.history : []).map((h) => el("tr", null,
          el("td", null, code(h.hash, "hash")), el("td", null, dateCell(h.created_timestamp, "ms")),
          el("td", null, dateCell(h.received_at, "ms")), el("td", { text: txt(h.source) }),
          el("td", null, yesNo(h.acknowledged)), el("td", null, code(h.message_id, "msgid")))),
        "No hash was ever seen for this user."));

    const attempts = el("section", { class: "panel" }, el("h2", { text: "Acknowledgement attempts" }),
      table("acks", ["At", "Who", "Result", "Hash", "Answer or reason"],
        (Array.isArray(u.acks) ? u.acks : []).map((a) => el("tr", null,
          el("td", null, dateCell(a.at, "ms")), el("td", { class: "who", text: txt(a.who) }),
          el("td", null, badge(txt(a.result), /fail|refus|error/.test(String(a.result)) ? "bad" : "muted")),
          el("td", null, code(a.hash, "hash")), el("td", { class: "reason", text: txt(a.answer) }))),
        "No acknowledgement was attempted."));

    const trail = el("section", { class: "panel audit-trail" }, el("h2", { text: "Audit trail" }));
    if (!audit.ok) trail.appendChild(el("p", { class: "error-text", text: "Could not load the audit trail: " + audit.error }));
    else {
      const entries = Array.isArray(audit.data.entries) ? audit.data.entries : [];
      trail.appendChild(table("audit", ["At", "Who", "Result", "Reason or answer", "Hash"],
        entries.map((e) => el("tr", { data: { auditId: e.id } },
          el("td", null, dateCell(e.at)), el("td", { class: "who", text: txt(e.who) }),
          el("td", null, badge(txt(e.result), "muted")), el("td", { class: "reason", text: txt(e.reason) }),
          el("td", null, code(e.hash, "hash")))),
        "Nothing about this user is in the audit log."));
      const more = audit.data.next_cursor;
      if (more || auditCursors.length > 1) {
        trail.appendChild(el("nav", { class: "pager", attrs: { "aria-label": "Audit pages" } },
          el("button", { type: "button", text: "← Newer", disabled: auditCursors.length <= 1,
                         on: { click: () => { auditCursors.pop(); lastSig = ""; load(); } } }),
          el("span", { class: "page-no", text: "Page " + auditCursors.length }),
          el("button", { type: "button", text: "Older →", disabled: !more,
                         on: { click: () => { auditCursors.push(more); lastSig = ""; load(); } } })));
      }
      trail.appendChild(el("p", { class: "hint" }, el("a", { href: "#audit?wa_id=" + encodeURIComponent(id), text: "Search the whole audit log" })));
    }

    return [head,
      el("div", { class: "columns" }, record, identity),
      decisions, history, attempts, trail];
  }

  return {
    id: "user",
    title: "User",
    mount(container, arg) {
      alive = true;
      input = arg;
      lastSig = "";
      auditCursors = [""];
      body = el("div", { class: "user-body" }, el("p", { class: "loading", text: "Loading " + input + "…" }));
      root = el("div", { class: "view view-user", data: { input } },
        el("p", { class: "crumbs" }, el("a", { href: "#overview", text: "Overview" }), " › user ",
          el("code", { text: input })),
        body);
      container.appendChild(root);
      return load();
    },
    refresh: () => load(),
    unmount() { alive = false; root = null; },
    href: () => userHref(input),
  };
}
