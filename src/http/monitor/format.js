/*
 * Pure helpers of the monitor: how numbers, times, statuses and outcomes read on the page, and
 * two DOM helpers that only ever write text (never HTML: callers and the LLM write some of it).
 */

export const ACTIVE_STATUSES = new Set(['initiated', 'ringing', 'in_progress']);

export const isActive = (c) => ACTIVE_STATUSES.has(c.status);

/** The remote party: who called us, or whom we called. */
export const remoteNumber = (c) => (c.direction === 'outbound' ? c.to : c.from) || '';

/** Hide all digits but the last four (and a leading "+d" country digit on long numbers). */
export function maskNumber(num) {
  num = String(num);
  const digits = (num.match(/\d/g) || []).length;
  if (digits <= 4) return num;
  const keepLead = num.startsWith('+') && digits > 7 ? 1 : 0;
  let seen = 0;
  return num.replace(/\d/g, (d) => {
    seen++;
    return seen <= keepLead || seen > digits - 4 ? d : '•';
  });
}

/** A number of the call as shown: the remote party's masked unless revealed; ours in full. */
export function shownNumber(c, which, revealed) {
  const n = c[which] || '';
  if (!n) return '—';
  const remote = n === remoteNumber(c);
  return remote && !revealed ? maskNumber(n) : n;
}

export function fmtClock(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  return String(Math.floor(s / 60)).padStart(2, '0') + ':' + String(s % 60).padStart(2, '0');
}

const TIME_FORMAT = { hour: '2-digit', minute: '2-digit', second: '2-digit' };
const DATE_FORMAT = { year: 'numeric', month: 'short', day: 'numeric' };

/** Local date and time: "Dec 1, 2026 09:30:12". */
export function fmtDateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleDateString([], DATE_FORMAT) + ' ' + d.toLocaleTimeString([], TIME_FORMAT);
}

/** Short local date and time for rows: "Dec 1 09:30" (the year only when not this one; the
 *  row's tooltip has the seconds). */
export function fmtShortDateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const date = d.getFullYear() === new Date().getFullYear()
    ? d.toLocaleDateString([], { month: 'short', day: 'numeric' })
    : d.toLocaleDateString([], DATE_FORMAT);
  return date + ' ' + d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export const human = (s) => (s ? String(s).replace(/_/g, ' ') : '—');
export const contactText = (c) => c.contact_name
  || (c.contact_id != null ? 'contact #' + c.contact_id : '—');
export const campaignText = (c) => c.campaign_name
  || (c.campaign_id != null ? '#' + c.campaign_id : '—');
export const dirText = (c) => (c.direction === 'outbound' ? '↗' : c.direction === 'inbound' ? '↙' : '·');
export const agentText = (c) => (c.agent ? c.agent + (c.agent_version != null ? ' v' + c.agent_version : '')
  : 'built-in agent');

/** A ratio as a percentage with one decimal ("66.7 %"), or "—". */
export const fmtPercent = (r) => (typeof r === 'number' ? (r * 100).toFixed(1) + ' %' : '—');
/** Seconds with one decimal ("42.5 s"), or "—". */
export const fmtSeconds = (s) => (typeof s === 'number' ? s.toFixed(1) + ' s' : '—');

/**
 * The status badge of a call. A line that was answered and hung up normally has the status
 * `completed`, whatever the conversation came to; shown as such next to a `failed` outcome it
 * reads as a success, so an ended call's status reads "ended" and the outcome badge says how it
 * went. The other end statuses (busy, no answer, failed, canceled) say it themselves.
 */
export function statusLabel(status) {
  return status === 'completed' ? 'ended' : human(status);
}

/** How an outcome reads: good, bad, warn or neutral (the badge's colour). */
const OUTCOME_TONE = {
  interested: 'good', callback_requested: 'good', transferred: 'good', completed: 'good',
  not_interested: 'neutral', voicemail: 'neutral', canceled: 'neutral',
  no_response: 'warn', busy: 'warn', no_answer: 'warn',
  failed: 'bad', do_not_call: 'bad',
};
export const outcomeTone = (o) => OUTCOME_TONE[o] || 'neutral';

/** Create an element with a class and text; text is always set through textContent. */
export function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text != null) e.textContent = text;
  return e;
}

/** Write text only when it changed (cheap and avoids needless layout work). */
export function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

/** Sets a property (`title`, `hidden`, …) only when it changes: a write of the same value still
 *  costs the browser a mutation and a style check, for every row on every event. */
export function setProp(node, name, value) { if (node[name] !== value) node[name] = value; }

export function setStatus(node, status) {
  setText(node, statusLabel(status));
  if (node.dataset.status !== status) node.dataset.status = status || '';
}

export function setOutcome(node, outcome) {
  setText(node, outcome ? human(outcome) : '');
  node.hidden = !outcome;
  node.dataset.tone = outcomeTone(outcome);
}

/** Digits of a text written as a phone number ("(555) 123-4567"), or '' for other text. */
export function searchDigits(q) {
  return /^[\d\s+\-().]+$/.test(q) && /\d/.test(q) ? q.replace(/\D/g, '') : '';
}

/** Whether a call matches a search the way `GET /v1/calls?q=` does. */
export function matchesSearch(c, q) {
  if (!q) return true;
  const text = q.toLowerCase();
  const digits = searchDigits(q);
  const numbers = [c.from || '', c.to || ''];
  if (digits && numbers.some((n) => n.includes(digits))) return true;
  if (!digits && numbers.some((n) => n.includes(q))) return true;
  return String(c.id).toLowerCase().includes(text)
    || String(c.contact_name || '').toLowerCase().includes(text);
}

/** The after-call analysis of a call as [label, text] lines: summary, success and why, the
 *  extracted data, and what went wrong (for the call view and the text export). */
export function analysisLines(a) {
  if (!a || typeof a !== 'object') return [];
  const text = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
  const lines = [];
  if (a.purged) lines.push(['Analysis', 'purged (retention)']);
  if (a.summary) lines.push(['Summary', text(a.summary)]);
  if (typeof a.success === 'boolean') {
    lines.push(['Success', (a.success ? 'yes' : 'no') + (a.success_reason ? ' (' + text(a.success_reason) + ')' : '')]);
  }
  if (a.data != null) {
    const parts = a.data && typeof a.data === 'object' && !Array.isArray(a.data)
      ? Object.entries(a.data).map(([k, v]) => k + ': ' + text(v))
      : [text(a.data)];
    lines.push(['Data', parts.join('; ')]);
  }
  if (a.data_error) lines.push(['Data error', text(a.data_error)]);
  if (a.error) lines.push(['Analysis error', text(a.error)]);
  return lines;
}
