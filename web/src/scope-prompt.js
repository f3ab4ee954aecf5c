// "This event / This and following events / All events": the question a
// change to one occurrence of a recurring event asks before it is sent
// (saved in the event dialog, dragged or resized in the calendar, or
// deleted). A modal <dialog> with a radio group (native radios: arrow keys
// move, Enter or "OK" answers, Escape or "Cancel" does not).
//
//   this       the occurrence alone (PATCH/DELETE /v1/events/{occurrence_id})
//   following  it and every later one (?scope=following: the series splits)
//   all        the whole series (its own id)

import { h } from './ui.js';

const CHOICES = [
  ['this', 'This event'],
  ['following', 'This and following events'],
  ['all', 'All events'],
];

let ui = null;
let pending = null; // { resolve, returnFocus }

function build() {
  const c = {};
  c.heading = h('h2', { id: 'scope-title' });
  c.text = h('p', { id: 'scope-text' });
  c.radios = {};
  c.why = h('p', { class: 'hint scope-why', id: 'scope-this-why', hidden: true });
  const rows = CHOICES.map(([value, label]) => {
    const input = h('input', { type: 'radio', name: 'scope', value, id: `scope-${value}` });
    c.radios[value] = input;
    return h('div', { class: 'scope-choice' }, input, h('label', { for: input.id, text: label }),
      value === 'this' ? c.why : null);
  });
  c.ok = h('button', { type: 'submit', class: 'btn btn-primary' }, 'OK');
  c.cancel = h('button', { type: 'button', class: 'btn', onclick: () => finish(null) }, 'Cancel');
  c.form = h('form', { novalidate: true, onsubmit: (ev) => { ev.preventDefault(); finish(chosen()); } },
    c.heading, c.text,
    h('fieldset', { class: 'scope-choices' },
      h('legend', { class: 'visually-hidden', text: 'Apply to' }), rows),
    h('div', { class: 'dialog-actions' }, h('span', { class: 'spacer' }), c.cancel, c.ok));
  c.dialog = h('dialog', { id: 'scope-prompt', class: 'dialog dialog-small', 'aria-labelledby': 'scope-title', 'aria-describedby': 'scope-text' }, c.form);
  // Escape: the same as Cancel.
  c.dialog.addEventListener('cancel', (ev) => { ev.preventDefault(); finish(null); });
  // Enter on a radio answers, as it does in a text field.
  c.form.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && ev.target instanceof HTMLInputElement && ev.target.type === 'radio') {
      ev.preventDefault();
      finish(chosen());
    }
  });
  document.body.append(c.dialog);
  return c;
}

function chosen() {
  return Object.values(ui.radios).find((r) => r.checked && !r.disabled)?.value || null;
}

function finish(value) {
  if (!pending) return;
  const { resolve, returnFocus } = pending;
  pending = null;
  if (ui.dialog.open) ui.dialog.close();
  if (returnFocus?.isConnected) returnFocus.focus();
  resolve(value);
}

/**
 * Asks which occurrences a change applies to. `verb`: 'change' or
 * 'delete'; `title`: the event's; `notThis`: why "This event" cannot
 * be chosen (series-only fields changed), or nothing. Resolves to 'this',
 * 'following', 'all', or null (cancelled).
 */
export function askScope({ verb = 'change', title = '', notThis = '' } = {}) {
  ui ||= build();
  if (pending) finish(null);
  const returnFocus = document.activeElement;
  ui.heading.textContent = verb === 'delete' ? 'Delete recurring event' : 'Change recurring event';
  ui.text.textContent = verb === 'delete'
    ? `“${title}” repeats. Delete which of its events?`
    : `“${title}” repeats. Apply the change to which of its events?`;
  ui.radios.this.disabled = Boolean(notThis);
  ui.why.hidden = !notThis;
  ui.why.textContent = notThis;
  if (notThis) ui.radios.this.setAttribute('aria-describedby', 'scope-this-why');
  else ui.radios.this.removeAttribute('aria-describedby');
  const first = CHOICES.map(([v]) => ui.radios[v]).find((r) => !r.disabled);
  first.checked = true;
  return new Promise((resolve) => {
    pending = { resolve, returnFocus };
    ui.dialog.showModal();
    first.focus();
  });
}

/** Whether the prompt is open (for tests and the keyboard shortcuts). */
export const isScopeOpen = () => Boolean(ui?.dialog.open);
