// What the views share: the signed-in session, the status line, links to a user's page
// and the operator's acts (acknowledge, release a hold, retry every failed one), each
// through the in-page dialog.

import { el, code, defs } from "./dom.js";
import * as api from "./api.js";
import { openDialog } from "./dialog.js";

// role: "admin" | "api" (from GET /v1/overview); canAct only for "admin".  An api token
// sees everything and acts on nothing: the act buttons are not drawn for it (and the
// daemon answers 403 anyway).
export const session = { caller: null, role: null, overview: null, canAct: false };

export function userHref(id) {
  return "#user/" + encodeURIComponent(String(id));
}

export function userLink(id, label) {
  if (id === null || id === undefined || id === "") return el("span", { class: "none", text: "—" });
  return el("a", { href: userHref(id), class: "user-link", text: label === undefined ? String(id) : String(label) });
}

// The status line under the header: what an act did, or why it failed.
let toastTimer = null;
export function notify(message, kind = "ok") {
  const box = document.getElementById("toast");
  if (!box) return;
  box.className = "toast toast-" + kind;
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, kind === "ok" ? 8000 : 15000);
}

export function hideNotice() {
  const box = document.getElementById("toast");
  if (box) box.hidden = true;
}

// The id an item is acted on by: its wa_id, or its user id when it has none.
export function idOf(item) {
  return item.wa_id !== null && item.wa_id !== undefined && item.wa_id !== "" ? item.wa_id : item.user_id;
}

const path = (id, what) => "/v1/identities/" + api.enc(id) + (what ? "/" + what : "");

// Acknowledge (or retry) one user's newest identity: POST /v1/identities/{id}/ack {"reason"}.
export function ackDialog(id, info, after, retry = false) {
  const who = info.name ? `${info.name} (${id})` : String(id);
  openDialog({
    kind: "ack",
    title: (retry ? "Retry the acknowledgement of " : "Acknowledge the new identity of ") + who,
    intro: [
      defs([
        ["User", code(id)],
        ["Profile name", info.name === undefined ? undefined : info.name],
        ["Previous hash", info.state === "hash_unknown" ? code(info.hash)
          : info.old_hash === undefined ? undefined : code(info.old_hash)],
        ["New hash", info.state === "hash_unknown" ? el("span", { class: "unknown", text: "not known yet" })
          : info.hash === undefined ? undefined : code(info.hash)],
        ["Attempts so far", info.attempts === undefined ? undefined : String(info.attempts)],
        ["Last error", info.last_error ? info.last_error : undefined],
      ], "compact"),
      el("p", { class: "warning",
                text: "Acknowledging tells WhatsApp you trust this person's new key, and the gate opens for " +
                      "them. Do it only after you verified the person another way (a call to the number on " +
                      "file, in person, …)." }),
    ],
    confirmLabel: retry ? "Confirm retry" : "Confirm acknowledgement",
    submit: async ({ reason }) => {
      const r = await api.post(path(id, "ack"), { reason });
      if (r.status === 202) {
        const by = r.data && r.data.requested_by ? " by " + r.data.requested_by : "";
        return { ok: true, message: `Acknowledgement of ${r.data && r.data.wa_id || id} queued${by}: ` +
                                    "the gate opens once the WABA client confirms it." };
      }
      if (r.status === 200) return { ok: true, message: `${r.data && r.data.wa_id || id} is already acknowledged.` };
      return { ok: false, error: r.error };
    },
    done: (res) => { notify(res.message); if (after) after(); },
  });
}

function holdCategory(v) {
  if (!v) return null;
  const i = String(v).lastIndexOf(":");
  const cat = i >= 0 ? String(v).slice(i + 1) : String(v);
  return cat === "*" ? "every category" : cat;
}

export function holdReleasedText(v) {
  const c = holdCategory(v);
  return c ? "released (" + c + ")" : null;
}

// Lift an account-takeover hold: POST /v1/identities/{id}/release {"reason","category"?}.
export function releaseDialog(id, info, after) {
  const who = info.name ? `${info.name} (${id})` : String(id);
  openDialog({
    kind: "release",
    title: "Release the hold of " + who,
    intro: [
      defs([
        ["User", code(id)],
        ["Hash", info.hash === undefined ? undefined : code(info.hash)],
        ["Released so far", info.hold_released ? holdReleasedText(info.hold_released) : undefined],
      ], "compact"),
      el("p", { class: "warning",
                text: "After an identity change, sensitive categories of sends (one-time passwords, payments, " +
                      "…) are refused for a while, acknowledged or not: the new key may be a thief's. " +
                      "Release the hold only when you know the person is who they say. A later change holds again." }),
    ],
    fields: [{ name: "category", label: "Category (optional)", placeholder: "every category",
               hint: "One [hold] category, e.g. authentication; empty: every category." }],
    confirmLabel: "Confirm release",
    submit: async ({ reason, fields }) => {
      const body = { reason };
      if (fields.category) body.category = fields.category;
      const r = await api.post(path(id, "release"), body);
      if (r.status === 200) {
        const d = r.data || {};
        const cat = d.category && d.category !== "*" ? d.category : "every category";
        return { ok: true, message: `Hold of ${d.wa_id || id} released (${cat})` +
                                    (d.released_by ? " by " + d.released_by : "") + "." };
      }
      return { ok: false, error: r.error };
    },
    done: (res) => { notify(res.message); if (after) after(); },
  });
}

// Retry every failed acknowledgement: show the count first, then
// POST /v1/identities/retry {"expected":N}; a 409 means the count changed.
export async function retryAllDialog(after) {
  const ov = await api.get("/v1/overview");
  if (!ov.ok) { notify("Could not read the count of failed acknowledgements: " + ov.error, "error"); return; }
  let expected = ov.data.failed;
  if (typeof expected !== "number") { notify("The count of failed acknowledgements is not known (Redis down?).", "error"); return; }
  if (expected === 0) { notify("No acknowledgement is failed: nothing to retry."); return; }
  const countText = (n) => el("p", { class: "count" },
    el("strong", { class: "retry-count", data: { count: n }, text: String(n) }),
    n === 1 ? " failed acknowledgement will be asked again from the WABA client."
            : " failed acknowledgements will be asked again from the WABA client.");
  const dlg = openDialog({
    kind: "retry",
    title: "Retry every failed acknowledgement",
    intro: [countText(expected),
            el("p", { class: "hint", text: "Each one is acknowledged to WhatsApp as if you had retried it yourself: " +
                                            "look at the list first." })],
    reason: false,
    confirmLabel: "Confirm retry of " + expected,
    submit: async () => {
      const r = await api.post("/v1/identities/retry", { expected });
      if (r.status === 202) {
        return { ok: true, message: `Asked again for ${r.data.retried} acknowledgement(s); ${r.data.failed} failed now.` };
      }
      if (r.status === 409) {
        const shown = expected;
        const again = await api.get("/v1/overview");
        if (again.ok && typeof again.data.failed === "number") {
          expected = again.data.failed;
          dlg.setIntro([countText(expected)]);
          dlg.setConfirmLabel("Confirm retry of " + expected);
          if (after) after();
          return { ok: false, error: `Nothing was retried: the count changed while you looked (${expected} ` +
                                     `are failed now, not ${shown}). Check the list, then confirm again to retry those ${expected}.` };
        }
        return { ok: false, error: "Nothing was retried: " + r.error };
      }
      return { ok: false, error: r.error };
    },
    done: (res) => { notify(res.message); if (after) after(); },
  });
}
