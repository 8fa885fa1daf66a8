// Overview: GET /v1/overview, refreshed by the app's poll (every few seconds).

import { el, defs, badge, fmtDuration, fmtDate, code } from "./dom.js";
import { session } from "./shared.js";

const CARDS = [
  { key: "pending", label: "Pending acknowledgements", href: "#pending",
    note: (o) => o.oldest_pending_s === null || o.oldest_pending_s === undefined ? "none waiting"
      : "oldest waits " + fmtDuration(o.oldest_pending_s) },
  { key: "failed", label: "Failed acknowledgements", href: "#failed", note: () => "given up; retry them" },
  { key: "held", label: "Recent changes (holds)", href: "#held", note: () => "newest change within the hold time" },
  { key: "queued", label: "Queued for the WABA client", note: () => "acknowledgements being sent" },
  { key: "blocked", label: "Blocked users", note: () => "mirrored from WhatsApp" },
  { key: "identity_changes_24h", label: "Identity changes, 24 h", note: () => "from webhooks" },
  { key: "identity_refusals_24h", label: "Sends refused, 24 h", note: () => "identity not acknowledged" },
];

export function overviewView() {
  let root, cards = {}, service, updated, lastSig = "";

  function card(c) {
    const value = el("span", { class: "card-value", data: { stat: c.key }, text: "…" });
    const note = el("span", { class: "card-note" });
    const inner = [el("span", { class: "card-label", text: c.label }), value, note];
    const box = c.href ? el("a", { class: ["card", "card-" + c.key], href: c.href }, inner)
                       : el("div", { class: ["card", "card-" + c.key] }, inner);
    cards[c.key] = { value, note, box };
    return box;
  }

  function serviceBox(o) {
    const redis = o.redis || {};
    const waba = o.waba || {};
    const rows = [
      ["Redis", el("span", null, redis.up ? badge("up", "ok") : badge("down", "bad"), " ", redis.status || "")],
      ["WABA client answers", el("span", null,
        badge(String(waba.answered_2xx ?? "—") + " × 2xx", "ok"), " ",
        badge(String(waba.answered_5xx ?? "—") + " × 5xx", waba.answered_5xx ? "warn" : "muted"), " ",
        badge(String(waba.no_answer ?? "—") + " × no answer", waba.no_answer ? "bad" : "muted"))],
      ["WhatsApp API", o.api === "cloud" ? "Cloud API" : o.api === "onprem" ? "On-Premises" : o.api],
      ["Acknowledgements", o.ack === "manual" ? "manual: an operator acknowledges each change"
        : o.ack === "auto" ? "automatic: waguard acknowledges each change" : o.ack],
    ];
    if (o.security_notifications) {
      const s = o.security_notifications;
      rows.push(["Security notifications", el("span", null,
        badge(String(s.state), s.state === "on" ? "ok" : "warn"), " policy " + s.policy,
        s.why ? el("span", { class: "why", text: " — " + s.why }) : null)]);
    }
    rows.push(["Signed in as", el("span", null, el("strong", { class: "caller", text: String(o.caller ?? "") }), " ",
                                 badge(o.role === "admin" ? "admin" : "api: read-only", o.role === "admin" ? "ok" : "muted"))]);
    const parts = [el("h2", { text: "Service" }), defs(rows)];
    if (o.identity_check && typeof o.identity_check === "object") {
      const tb = el("tbody");
      for (const [num, st] of Object.entries(o.identity_check)) {
        const s = String(st);
        tb.appendChild(el("tr", null, el("td", null, code(num)),
          el("td", null, badge(s, s === "on" ? "ok" : s.startsWith("refused") ? "bad" : "warn"))));
      }
      parts.push(el("h3", { text: "Identity key check per number" }),
                 el("table", { class: "grid narrow" },
                   el("thead", null, el("tr", null, el("th", { scope: "col", text: "Phone number id" }),
                                                   el("th", { scope: "col", text: "State" }))), tb));
    }
    return el("section", { class: "panel service" }, parts);
  }

  return {
    id: "overview",
    title: "Overview",
    mount(container) {
      cards = {};
      service = el("div", { class: "service-slot" });
      updated = el("p", { class: "updated", attrs: { "aria-live": "off" } });
      root = el("div", { class: "view view-overview" },
        el("div", { class: "view-head" }, el("h1", { text: "Overview" }), updated),
        el("div", { class: "cards" }, CARDS.map(card)),
        service);
      container.appendChild(root);
      if (session.overview) this.show(session.overview);
    },
    // o: the newest GET /v1/overview answer, or null with error when it failed.
    show(o, error) {
      if (!root) return;
      if (!o) {
        updated.textContent = "Not updated: " + (error || "no answer") + " (trying again)";
        updated.classList.add("stale");
        return;
      }
      updated.classList.remove("stale");
      updated.textContent = "Updated " + fmtDate(Date.now()).slice(11) + " · refreshed every few seconds";
      for (const c of CARDS) {
        const v = o[c.key];
        const t = v === undefined || v === null ? "—" : String(v);
        const k = cards[c.key];
        if (k.value.textContent !== t) k.value.textContent = t;
        const n = o.redis && o.redis.up === false ? "Redis is down" : c.note(o);
        if (k.note.textContent !== n) k.note.textContent = n;
        k.box.classList.toggle("attention", (c.key === "pending" || c.key === "failed") && Number(v) > 0);
      }
      const sig = JSON.stringify([o.redis, o.waba, o.api, o.ack, o.identity_check, o.security_notifications, o.caller, o.role]);
      if (sig !== lastSig) {
        lastSig = sig;
        service.replaceChildren(serviceBox(o));
      }
    },
    unmount() { root = null; lastSig = ""; },
  };
}
