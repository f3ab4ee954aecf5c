// Groups: create (hierarchical or flat, optionally under a group one
// owns), invite by username, answer one's own invitations, members and
// ranks, and the group agenda (details where the rules allow, otherwise
// busy blocks), drawn with FullCalendar like the personal calendar, with
// its private feed URL for other calendar apps.

import { Calendar } from '@fullcalendar/core';
import timeGridPlugin from '@fullcalendar/timegrid';
import listPlugin from '@fullcalendar/list';
import luxonPlugin from '@fullcalendar/luxon3';
import { get, post, patch, del } from './api.js';
import { currentUser } from './session.js';
import { isoUtc, formatRange, formatDays, midnightDays } from './time.js';
import { trackToolbar } from './calendar.js';
import { feedBox } from './calendar-apps.js';
import { h, replace, field, showError, clearErrors, toast } from './ui.js';

// Member colours: dark enough for white text (WCAG AA, 4.5:1).
// Invitations name the invitee by id only: remember the names we invited.
const invitedNames = new Map();

const COLORS = ['#1f5fa8', '#8a3b12', '#2e6b30', '#6b3fa0', '#9c2a4f', '#11667a', '#705b00', '#4a4a8a'];

/**
 * Mounts the groups page in `root`. `hooks.openEvent(id)` opens an event.
 * Returns { refresh(), show(groupId), setTimeZone(tz) }.
 */
export function mountGroups(root, hooks) {
  let groups = [];
  let selected = null; // group id
  let agendaCal = null;
  // The feed URLs made here, by group (the API cannot show them again):
  // the group's page drawn anew still shows its own. Gone on sign-out.
  const feedUrls = new Map();

  const list = h('ul', { class: 'group-list' });
  const invites = h('ul', { class: 'invitation-list' });
  const detail = h('div', { class: 'group-detail' });

  // New group form.
  const name = h('input', { name: 'name', type: 'text', required: true, maxlength: 100 });
  const description = h('input', { name: 'description', type: 'text', maxlength: 2000 });
  const kind = h('select', { name: 'kind' },
    h('option', { value: 'hierarchical', text: 'Hierarchical: ranks, superiors may accept for those below' }),
    h('option', { value: 'flat', text: 'Flat: everyone equal, everyone answers' }));
  const parent = h('select', { name: 'parent_id' }, h('option', { value: '', text: 'None (a top-level group)' }));
  const createForm = h('form', { class: 'card', novalidate: true, 'aria-labelledby': 'new-group-title', onsubmit: (ev) => { ev.preventDefault(); create(); } },
    h('h2', { id: 'new-group-title', text: 'New group' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    field('Name', name, { field: 'name' }),
    field('Description', description, { field: 'description' }),
    field('Kind', kind, { field: 'kind' }),
    field('Inside group', parent, { field: 'parent_id', hint: 'Only groups you own can hold subgroups.' }),
    h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create group'));

  replace(root,
    h('div', { class: 'groups-layout' },
      h('div', { class: 'groups-side' },
        h('section', { class: 'card', 'aria-labelledby': 'my-groups-title' }, h('h2', { id: 'my-groups-title', text: 'Your groups' }), list),
        h('section', { class: 'card', 'aria-labelledby': 'my-invites-title' }, h('h2', { id: 'my-invites-title', text: 'Invitations for you' }), invites),
        createForm),
      detail));

  async function refresh() {
    try {
      const [g, inv] = await Promise.all([get('/v1/groups'), get('/v1/invitations')]);
      groups = g.items;
      renderList();
      renderInvites(inv.items.filter((i) => i.status === 'pending'));
      replace(parent, h('option', { value: '', text: 'None (a top-level group)' }),
        groups.filter((x) => x.my_rank === 0).map((x) => h('option', { value: x.id, text: x.name })));
      if (selected && !groups.some((x) => x.id === selected)) { selected = null; }
      if (!selected && groups.length) selected = groups[0].id;
      await renderDetail();
    } catch (e) {
      toast(`Could not load groups: ${e.message}`, { kind: 'error' });
    }
  }

  function renderList() {
    if (!groups.length) { replace(list, h('li', { class: 'empty', text: 'No groups yet: create one below.' })); return; }
    // Subgroups are listed under their parent.
    const byParent = new Map();
    for (const g of groups) {
      const p = groups.some((x) => x.id === g.parent_id) ? g.parent_id : null;
      if (!byParent.has(p)) byParent.set(p, []);
      byParent.get(p).push(g);
    }
    const items = (p, depth) => (byParent.get(p) || []).sort((a, b) => a.name.localeCompare(b.name)).flatMap((g) => [
      h('li', { style: `--depth:${depth}` },
        h('button', { type: 'button', class: 'group-link', 'aria-current': g.id === selected ? 'true' : false, onclick: () => show(g.id) },
          h('span', { text: g.name }), h('span', { class: 'muted', text: ` · ${g.kind}, rank ${g.my_rank}` }))),
      ...items(g.id, depth + 1),
    ]);
    replace(list, items(null, 0));
  }

  function renderInvites(pending) {
    if (!pending.length) { replace(invites, h('li', { class: 'empty', text: 'None.' })); return; }
    replace(invites, pending.map((i) => h('li', { class: 'invitation', dataset: { id: i.id } },
      h('span', { text: `“${i.group_name}” (rank ${i.rank})` }),
      h('button', { type: 'button', class: 'btn btn-small btn-primary', onclick: () => answer(i, 'accept') }, 'Join'),
      h('button', { type: 'button', class: 'btn btn-small', onclick: () => answer(i, 'decline') }, 'Decline'))));
  }

  async function answer(i, how) {
    try {
      await post(`/v1/invitations/${i.id}/${how}`);
      toast(how === 'accept' ? `You joined “${i.group_name}”.` : `Declined “${i.group_name}”.`);
      if (how === 'accept') selected = i.group_id;
      refresh();
    } catch (e) {
      toast(`Could not answer: ${e.message}`, { kind: 'error' });
      refresh();
    }
  }

  async function create() {
    clearErrors(createForm);
    const body = { name: name.value.trim(), kind: kind.value };
    if (description.value.trim()) body.description = description.value.trim();
    if (parent.value) body.parent_id = parent.value;
    try {
      const g = await post('/v1/groups', body);
      toast(`Created the group “${g.name}”.`);
      createForm.reset();
      selected = g.id;
      await refresh();
      detail.querySelector('h2')?.focus();
    } catch (e) {
      showError(createForm, e);
    }
  }

  async function show(id) {
    selected = id;
    renderList();
    await renderDetail();
    detail.querySelector('h2')?.focus();
  }

  async function renderDetail() {
    agendaCal?.destroy();
    agendaCal = null;
    const g = groups.find((x) => x.id === selected);
    if (!g) { replace(detail, h('p', { class: 'muted', text: 'Choose or create a group.' })); return; }
    let full = g;
    let members = [];
    let pending = [];
    try {
      [full, members] = await Promise.all([get(`/v1/groups/${g.id}`), get(`/v1/groups/${g.id}/members`).then((r) => r.items)]);
      pending = await get(`/v1/groups/${g.id}/invitations`).then((r) => r.items).catch(() => []);
    } catch (e) {
      replace(detail, h('p', { class: 'form-error', text: `Could not load the group: ${e.message}` }));
      return;
    }
    const me = currentUser();
    const myRank = full.my_rank;
    const isOwner = myRank === 0;
    const hier = full.kind === 'hierarchical';
    members.sort((a, b) => a.rank - b.rank || a.username.localeCompare(b.username));
    const color = new Map(members.map((m, i) => [m.user_id, COLORS[i % COLORS.length]]));

    const memberRows = members.map((m) => {
      const mine = m.user_id === me.id;
      const below = m.rank > myRank; // a superior manages those ranked below
      const rankInput = h('input', { type: 'number', min: isOwner ? 0 : myRank + 1, max: 1000, value: String(m.rank), 'aria-label': `Rank of ${m.username}`, class: 'rank-input' });
      const cells = [
        h('td', {}, h('span', { class: 'swatch', style: `background:${color.get(m.user_id)}`, 'aria-hidden': 'true' }), ` ${m.username}${mine ? ' (you)' : ''}`),
        h('td', { text: m.rank === 0 ? '0 (owner)' : String(m.rank) }),
        h('td', {},
          !mine && below && hier ? [rankInput, h('button', { type: 'button', class: 'btn btn-small', onclick: () => setRank(m, Number(rankInput.value)) }, 'Set rank')] : null,
          !mine && isOwner ? h('button', { type: 'button', class: 'btn btn-small', onclick: () => setRank(m, 0) }, 'Make owner') : null,
          !mine && below ? h('button', { type: 'button', class: 'btn btn-small btn-danger', onclick: () => removeMember(m) }, 'Remove') : null,
          mine && !isOwner ? h('button', { type: 'button', class: 'btn btn-small btn-danger', onclick: () => removeMember(m) }, 'Leave group') : null),
      ];
      return h('tr', { dataset: { username: m.username } }, cells);
    });

    const who = h('input', { name: 'username', type: 'text', list: 'invite-suggestions', autocomplete: 'off', spellcheck: 'false', required: true });
    const suggestions = h('datalist', { id: 'invite-suggestions' });
    let t = null;
    who.addEventListener('input', () => {
      clearTimeout(t);
      const q = who.value.trim();
      if (q) t = setTimeout(() => get('/v1/users', { q }).then((r) => replace(suggestions, r.items.map((u) => h('option', { value: u.username })))).catch(() => {}), 200);
    });
    const rank = h('input', { name: 'rank', type: 'number', min: myRank + 1, max: 1000, value: String(myRank + 1) });
    const inviteForm = h('form', { class: 'invite-form', novalidate: true, 'aria-labelledby': 'invite-title', onsubmit: async (ev) => {
      ev.preventDefault();
      clearErrors(inviteForm);
      const body = { username: who.value.trim() };
      if (hier && rank.value) body.rank = Number(rank.value);
      try {
        const inv = await post(`/v1/groups/${g.id}/invitations`, body);
        invitedNames.set(inv.invitee_id, body.username);
        toast(`Invited ${body.username} to “${full.name}”.`);
        await renderDetail();
      } catch (e) { showError(inviteForm, e); }
    } },
    h('h3', { id: 'invite-title', text: 'Invite someone' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    h('div', { class: 'row' },
      field('Username', who, { field: 'username' }),
      hier ? field('Rank', rank, { field: 'rank', hint: `Below yours (${myRank}); larger is lower.` }) : null),
    suggestions,
    h('button', { type: 'submit', class: 'btn btn-primary' }, 'Send invitation'));

    const agendaEl = h('div', { class: 'group-agenda-calendar', 'aria-label': `Agenda of ${full.name}` });
    replace(detail,
      h('section', { class: 'card', 'aria-labelledby': 'group-title' },
        h('h2', { id: 'group-title', tabindex: '-1', text: full.name }),
        h('p', { class: 'muted', text: `${hier ? 'Hierarchical' : 'Flat'} group · your rank ${myRank}${full.description ? ` · ${full.description}` : ''}` }),
        full.subgroups?.length ? h('p', {}, 'Subgroups: ', full.subgroups.map((s, i) => [i ? ', ' : '', h('button', { type: 'button', class: 'link', onclick: () => show(s.id) }, s.name)])) : null,
        h('table', { class: 'members' },
          h('caption', { text: 'Members' }),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Member' }), h('th', { scope: 'col', text: 'Rank' }), h('th', { scope: 'col', text: 'Actions' }))),
          h('tbody', {}, memberRows)),
        pending.length ? h('div', {},
          h('h3', { text: 'Pending invitations' }),
          h('ul', {}, pending.map((p) => h('li', {},
            `${invitedNames.get(p.invitee_id) || 'Someone'} at rank ${p.rank} `,
            h('button', { type: 'button', class: 'btn btn-small', onclick: () => revoke(p) }, 'Withdraw'))))) : null,
        inviteForm,
        isOwner ? h('button', { type: 'button', class: 'btn btn-danger', onclick: (ev) => removeGroup(full, ev.currentTarget) }, 'Delete group') : null),
      h('section', { class: 'card group-agenda', 'aria-labelledby': 'group-agenda-title' },
        h('h2', { id: 'group-agenda-title', text: 'Group agenda' }),
        h('p', { class: 'muted', text: 'Details where you may see them (yourself, the group’s own events, members ranked below you); busy blocks otherwise. All-day events sit in the all-day row: they are free time.' }),
        h('div', { class: 'group-feed', role: 'group', 'aria-label': 'Feed of the group agenda' },
          feedBox({
            label: 'Feed URL',
            name: `Feed URL of “${full.name}”`,
            hint: 'Subscribe to it in another calendar app: the group agenda as you see it here. Anyone with the URL can read it: share it with nobody.',
            make: () => post(`/v1/groups/${g.id}/calendar-feed`),
            url: feedUrls.get(g.id),
            made: (url) => feedUrls.set(g.id, url),
          })),
        h('ul', { class: 'legend', 'aria-label': 'Members' }, members.map((m) => h('li', {}, h('span', { class: 'swatch', style: `background:${color.get(m.user_id)}`, 'aria-hidden': 'true' }), ` ${m.username}`))),
        agendaEl));

    agendaCal = new Calendar(agendaEl, {
      plugins: [timeGridPlugin, listPlugin, luxonPlugin],
      timeZone: me.time_zone || 'UTC',
      initialView: 'timeGridWeek',
      headerToolbar: { left: 'prev,next today', center: 'title', right: 'timeGridWeek,listWeek' },
      buttonIcons: false,
      buttonText: { prev: '‹', next: '›', today: 'Today', week: 'Week', list: 'List' },
      firstDay: 1,
      // All-day items are markers in the all-day row (free time), not
      // 24-hour busy blocks.
      allDaySlot: true,
      allDayText: 'All day',
      // No inner scroll pane (see calendar.js); hour rows keep it short.
      height: 'auto',
      slotDuration: '01:00:00',
      eventTimeFormat: { hour: '2-digit', minute: '2-digit', hour12: false },
      slotLabelFormat: { hour: '2-digit', minute: '2-digit', hour12: false },
      eventInteractive: true,
      events: (info, ok, fail) => {
        get(`/v1/groups/${g.id}/agenda`, { from: isoUtc(info.start), to: isoUtc(info.end) })
          .then((r) => ok(r.members.flatMap((m) => m.items.map((it, i) => {
            const days = it.all_day ? agendaDays(it) : null;
            return {
              id: `${m.user_id}-${i}-${it.start}`,
              title: `${m.username}: ${it.event ? it.event.title : (days ? 'all-day event' : 'busy')}`,
              start: days ? days[0] : it.start,
              end: days ? days[1] : it.end,
              allDay: Boolean(days),
              // A marker, light (free time): the member's colour as text and edge.
              backgroundColor: days ? '#fff' : (color.get(m.user_id) || COLORS[0]),
              textColor: days ? (color.get(m.user_id) || COLORS[0]) : undefined,
              borderColor: color.get(m.user_id) || COLORS[0],
              classNames: [it.event ? 'agenda-detail' : 'agenda-busy', ...(days ? ['agenda-all-day'] : [])],
              extendedProps: { event: it.event || null, days },
            };
          }))))
          .catch((e) => { toast(`Could not load the group agenda: ${e.message}`, { kind: 'error' }); fail(e); });
      },
      loading: (busy) => agendaEl.setAttribute('aria-busy', busy ? 'true' : 'false'),

      eventClick: (info) => {
        info.jsEvent.preventDefault();
        const ev = info.event.extendedProps.event;
        if (ev) hooks.openEvent(ev.recurring_event_id || ev.id);
        else {
          const { days } = info.event.extendedProps;
          const when = days ? formatDays(days[0], days[1]) : formatRange(info.event.startStr, info.event.endStr, me.time_zone || 'UTC');
          toast(`${info.event.title}, ${when}: no details for you.`);
        }
      },
    });
    agendaCal.render();
    trackToolbar(agendaEl);
  }

  /**
   * The days ([first, day after the last]) of an all-day agenda item: the
   * event's dates when it is detailed; otherwise from its start and end,
   * the midnights of a zone the item does not name (`midnightDays`).
   */
  function agendaDays(it) {
    if (it.event?.start_date && it.event?.end_date) return [it.event.start_date, it.event.end_date];
    return midnightDays(it.start, it.end);
  }

  async function setRank(m, rank) {
    try {
      await patch(`/v1/groups/${selected}/members/${m.user_id}`, { rank });
      toast(rank === 0 ? `${m.username} now owns the group.` : `${m.username} is now rank ${rank}.`);
      await refresh();
    } catch (e) { toast(`Could not change the rank: ${e.message}`, { kind: 'error' }); }
  }

  async function removeMember(m) {
    const self = m.user_id === currentUser().id;
    try {
      await del(`/v1/groups/${selected}/members/${m.user_id}`);
      toast(self ? 'You left the group.' : `Removed ${m.username}.`);
      if (self) selected = null;
      await refresh();
    } catch (e) { toast(`Could not ${self ? 'leave' : 'remove'}: ${e.message}`, { kind: 'error' }); }
  }

  async function revoke(p) {
    try {
      await del(`/v1/groups/${selected}/invitations/${p.id}`);
      toast('Invitation withdrawn.');
      await renderDetail();
    } catch (e) { toast(`Could not withdraw: ${e.message}`, { kind: 'error' }); }
  }

  async function removeGroup(g, btn) {
    // Asking twice keeps accidents away without window.confirm.
    if (btn.dataset.armed !== 'yes') {
      btn.dataset.armed = 'yes';
      btn.textContent = `Really delete “${g.name}”? Press again`;
      return;
    }
    try {
      await del(`/v1/groups/${g.id}`);
      toast(`Deleted “${g.name}”.`);
      selected = null;
      await refresh();
    } catch (e) { toast(`Could not delete: ${e.message}`, { kind: 'error' }); }
  }

  return {
    refresh,
    show: async (id) => { if (id) selected = id; await refresh(); },
    refetchAgenda: () => agendaCal?.refetchEvents(),
    setTimeZone: (tz) => agendaCal?.setOption('timeZone', tz),
    updateSize: () => agendaCal?.updateSize(),
    destroy: () => { agendaCal?.destroy(); agendaCal = null; },
  };
}
