// The in-page confirmation dialog of every act (acknowledge, release, retry): a modal
// <dialog> with the operator's reason (a <textarea name="reason">, required where the
// act takes one) and a confirm button.  Never window.prompt/confirm.

import { el } from "./dom.js";

let seq = 0;

export function dialogOpen() {
  return document.querySelector("dialog[open]") !== null;
}

// opts: {title, intro: [nodes], kind ("ack" | "release" | "retry" | …), confirmLabel,
//        reason: {label, hint} | false, fields: [{name, label, hint, placeholder}],
//        submit: async ({reason, fields}) → {ok: true, message} | {ok: false, error},
//        done: (result) → void}
// Returns {dialog, setIntro(nodes), setConfirmLabel(text), close()}.
export function openDialog(opts) {
  const id = "dlg" + (++seq);
  const error = el("p", { class: "dialog-error", id: id + "-err", hidden: true, attrs: { role: "alert" } });
  let textarea = null;
  const body = [];
  if (opts.reason !== false) {
    const r = opts.reason || {};
    textarea = el("textarea", { name: "reason", id: id + "-reason", rows: 3, maxLength: 500, required: true,
                                attrs: { "aria-describedby": id + "-reason-hint", "aria-required": "true" } });
    body.push(el("div", { class: "field" },
      el("label", { htmlFor: id + "-reason", text: r.label || "Reason (goes into the audit trail)" }),
      textarea,
      el("p", { class: "hint", id: id + "-reason-hint",
                text: r.hint || "Say how you verified the person: who, how, when (at most 500 bytes)." })));
  }
  const inputs = {};
  for (const f of opts.fields || []) {
    const input = el("input", { type: "text", name: f.name, id: id + "-" + f.name, placeholder: f.placeholder || "",
                                autocomplete: "off", spellcheck: false });
    inputs[f.name] = input;
    body.push(el("div", { class: "field" },
      el("label", { htmlFor: input.id, text: f.label }), input,
      f.hint ? el("p", { class: "hint", text: f.hint }) : null));
  }
  const intro = el("div", { class: "dialog-intro" });
  const confirm = el("button", { type: "submit", name: "confirm", class: ["primary", "confirm"],
                                 text: opts.confirmLabel || "Confirm", data: { action: "confirm" } });
  const cancel = el("button", { type: "button", name: "cancel", class: "cancel", text: "Cancel",
                                data: { action: "cancel" } });
  const heading = el("h2", { id: id + "-title", text: opts.title });
  const form = el("form", { class: "dialog-form", noValidate: true },
    heading, intro, body, error,
    el("div", { class: "dialog-buttons" }, cancel, confirm));
  const dialog = el("dialog", { class: ["act-dialog", opts.kind && "act-" + opts.kind],
                                attrs: { "aria-labelledby": id + "-title" }, data: { kind: opts.kind } }, form);

  const setIntro = (nodes) => { intro.replaceChildren(...[].concat(nodes || []).filter(Boolean)); };
  setIntro(opts.intro);
  const showError = (msg) => {
    error.textContent = msg;
    error.hidden = !msg;
  };
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    if (dialog.open) dialog.close();
    dialog.remove();
  };
  if (textarea) textarea.addEventListener("input", () => {
    if (textarea.value.trim() && textarea.getAttribute("aria-invalid")) {
      textarea.removeAttribute("aria-invalid");
      showError("");
    }
  });
  cancel.addEventListener("click", close);
  dialog.addEventListener("close", close);
  dialog.addEventListener("cancel", (e) => { e.preventDefault(); close(); });

  let busy = false;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (busy) return;
    const reason = textarea ? textarea.value.trim() : undefined;
    if (textarea && !reason) {
      showError("A reason is required: write how you verified the person before confirming.");
      textarea.setAttribute("aria-invalid", "true");
      textarea.focus();
      return;
    }
    if (textarea && new TextEncoder().encode(reason).length > 500) {
      showError("The reason is too long: waguard keeps at most 500 bytes (accented letters count two).");
      textarea.setAttribute("aria-invalid", "true");
      textarea.focus();
      return;
    }
    if (textarea) textarea.removeAttribute("aria-invalid");
    const fields = {};
    for (const [k, input] of Object.entries(inputs)) fields[k] = input.value.trim();
    busy = true;
    confirm.disabled = true;
    showError("");
    dialog.classList.add("busy");
    let res;
    try {
      res = await opts.submit({ reason, fields });
    } catch (err) {
      res = { ok: false, error: String(err && err.message || err) };
    }
    busy = false;
    confirm.disabled = false;
    dialog.classList.remove("busy");
    if (res && res.ok) {
      close();
      if (opts.done) opts.done(res);
    } else {
      showError((res && res.error) || "The request failed.");
    }
  });

  document.body.appendChild(dialog);
  dialog.showModal();
  (textarea || confirm).focus();
  return { dialog, setIntro, setConfirmLabel: (t) => { confirm.textContent = t; }, close, showError };
}
