// Small DOM helpers shared by every module: an element builder, toasts,
// and the one way API errors are shown next to form fields.

/**
 * Builds an element. `attrs`: `class`, `text`, `html` is not offered on
 * purpose (everything from the API is text), `on*` functions become
 * listeners, `true`/`false` toggle boolean attributes, `dataset` an object.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idCounter = 0;
/** A unique id for label/aria wiring. */
export function uid(prefix = 'id') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

// Toasts: at most MAX_TOASTS at once (a new one pushes the oldest out),
// each gone after a while unless the pointer or focus is on it. They are
// a glance, not the record: the notifications panel keeps everything.
const MAX_TOASTS = 3;
const MIN_RESUME_MS = 3000; // left to read after the pointer or focus leaves
const shown = new WeakMap(); // toast element -> { close, held }
let focusBefore = null; // where focus was before it went into a toast

function toastBox() {
  const box = document.getElementById('toasts');
  if (!box.dataset.wired) {
    box.dataset.wired = '1';
    // Remember where keyboard focus came from, to give it back when the
    // toast it went to is dismissed.
    box.addEventListener('focusin', (ev) => {
      if (ev.relatedTarget instanceof HTMLElement && !box.contains(ev.relatedTarget)) focusBefore = ev.relatedTarget;
    });
  }
  return box;
}

/**
 * Shows a toast in the polite live region. `actions`: [{label, run}].
 * It goes after `timeout` ms (6 s; 12 s with actions or for an error),
 * paused while hovered or focused; its × button or Escape (focus inside)
 * dismisses it.
 */
export function toast(message, { kind = 'info', actions = [], timeout } = {}) {
  const box = toastBox();
  const ms = timeout ?? (actions.length || kind === 'error' ? 12000 : 6000);
  let left = ms;
  let startedAt = 0;
  let timer = null;
  let hovered = false;
  const focused = () => el.contains(document.activeElement);
  const held = () => hovered || focused();

  // `why` (timeout, evicted, dismissed, action, cleared) is left on the
  // element as data-gone, for tests and debugging. `byKeyboard`: focus
  // goes back to where it was before the toast (a mouse click leaves it).
  function close(why, byKeyboard = true) {
    if (!el.isConnected) return;
    clearTimeout(timer);
    timer = null;
    el.dataset.gone = why;
    const hadFocus = focused();
    el.remove();
    if (hadFocus && byKeyboard && focusBefore?.isConnected) focusBefore.focus();
  }
  function pause() {
    if (!timer) return;
    clearTimeout(timer);
    timer = null;
    left -= Date.now() - startedAt;
  }
  function resume() {
    if (timer || !el.isConnected || held()) return;
    left = Math.max(left, MIN_RESUME_MS);
    startedAt = Date.now();
    timer = setTimeout(close, left, 'timeout');
  }

  const el = h('div', { class: `toast toast-${kind}` },
    h('p', { class: 'toast-text', text: message }),
    h('div', { class: 'toast-actions' },
      actions.map((a) => h('button', { type: 'button', class: 'btn btn-small', onclick: (ev) => { close('action', ev.detail === 0); a.run(); } }, a.label)),
      h('button', { type: 'button', class: 'btn btn-small btn-quiet', 'aria-label': 'Dismiss', onclick: (ev) => close('dismissed', ev.detail === 0) }, '×')));
  el.addEventListener('pointerenter', () => { hovered = true; pause(); });
  el.addEventListener('pointerleave', () => { hovered = false; resume(); });
  el.addEventListener('focusin', pause);
  el.addEventListener('focusout', (ev) => { if (!el.contains(ev.relatedTarget)) setTimeout(resume); });
  el.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') { ev.preventDefault(); ev.stopPropagation(); close('dismissed'); }
  });
  shown.set(el, { close, held });
  box.append(el);

  // Too many: the oldest goes first, but never one being read or used (at
  // most two are: one under the pointer, one with focus).
  const all = [...box.querySelectorAll('.toast')];
  for (let extra = all.length - MAX_TOASTS; extra > 0; extra -= 1) {
    const victim = all.find((t) => t !== el && t.isConnected && !shown.get(t)?.held());
    if (!victim) break;
    shown.get(victim).close('evicted');
  }
  startedAt = Date.now();
  timer = setTimeout(close, left, 'timeout');
  return el;
}

/** Dismisses every toast (e.g. when the screen changes). */
export function clearToasts() {
  for (const t of document.querySelectorAll('#toasts .toast')) {
    const s = shown.get(t);
    if (s) s.close('cleared'); else t.remove();
  }
}

/** Clears the error messages `showError` put in `form`. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.field-error')) { el.textContent = ''; el.hidden = true; }
  const top = form.querySelector('.form-error');
  if (top) { top.textContent = ''; top.hidden = true; }
}

/**
 * Shows an API error in `form`: next to the control named by
 * `details.field` (a control with `data-field` or `name` equal to it),
 * otherwise at the top of the form. Focuses the control so keyboard and
 * screen-reader users land on what to fix.
 */
export function showError(form, err) {
  clearErrors(form);
  const field = err?.field;
  const control = field && (form.querySelector(`[data-field="${CSS.escape(field)}"]`) || form.querySelector(`[name="${CSS.escape(field)}"]`));
  const slot = control && form.querySelector(`#${CSS.escape(control.getAttribute('aria-errormessage') || '')}`);
  if (control && slot) {
    slot.textContent = err.message;
    slot.hidden = false;
    control.setAttribute('aria-invalid', 'true');
    control.focus();
    return;
  }
  const top = form.querySelector('.form-error');
  if (top) {
    top.textContent = err?.message || String(err);
    top.hidden = false;
    top.focus();
  } else {
    toast(err?.message || String(err), { kind: 'error' });
  }
}

/**
 * A labelled form control with its error slot. `control` is the input;
 * its id, aria-errormessage and aria-describedby are wired here.
 */
export function field(label, control, { hint, field: apiField } = {}) {
  const id = control.id || uid('f');
  control.id = id;
  const errId = `${id}-error`;
  control.setAttribute('aria-errormessage', errId);
  if (apiField) control.dataset.field = apiField;
  const hintEl = hint ? h('p', { class: 'hint', id: `${id}-hint`, text: hint }) : null;
  const described = [errId, hintEl && hintEl.id].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', described);
  return h('div', { class: 'field' },
    h('label', { for: id, text: label }),
    control,
    hintEl,
    h('p', { class: 'field-error', id: errId, hidden: true }));
}

/** Whether a key event comes from somewhere typing happens. */
export function isTyping(ev) {
  const t = ev.target;
  return t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName));
}
