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

/**
 * Shows a toast in the polite live region. `actions`: [{label, run}].
 * Toasts with actions stay longer; every toast can be dismissed.
 */
export function toast(message, { kind = 'info', actions = [], timeout } = {}) {
  const box = document.getElementById('toasts');
  const close = () => el.remove();
  const el = h('div', { class: `toast toast-${kind}` },
    h('p', { class: 'toast-text', text: message }),
    h('div', { class: 'toast-actions' },
      actions.map((a) => h('button', { type: 'button', class: 'btn btn-small', onclick: () => { close(); a.run(); } }, a.label)),
      h('button', { type: 'button', class: 'btn btn-small btn-quiet', 'aria-label': 'Dismiss', onclick: close }, '×')));
  box.append(el);
  const ms = timeout ?? (actions.length ? 12000 : 6000);
  // Keep a toast the pointer or focus is on, so nobody loses an action mid-click.
  let timer = setTimeout(close, ms);
  el.addEventListener('mouseenter', () => clearTimeout(timer));
  el.addEventListener('focusin', () => clearTimeout(timer));
  el.addEventListener('mouseleave', () => { timer = setTimeout(close, ms); });
  return el;
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
