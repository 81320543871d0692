/*
 * asterai monitor: the supervisors' live view of an organization's calls.
 *
 * Data flow
 *   1. A REST snapshot of the active calls (GET v1/calls?active=true) gives the calls and
 *      `last_event_id`, the newest event at snapshot time.
 *   2. The WebSocket feed opens with since=<that id>: the server replays everything after it, then
 *      continues live. On any close we reconnect with since=<highest id applied>, so nothing is
 *      missed and, because events with id <= that are dropped, nothing is applied twice.
 *   3. Events change `state` at once (cheap); the DOM catches up once per animation frame, touching
 *      only the rows and turns that changed.
 *
 * Modules: format.js (pure helpers), api.js (REST), charts.js (SVG bars), dashboard.js (the
 * today strip and the campaign view); this one holds the calls, the feed and the wiring. Nothing
 * is put on `window`: tests observe the page through its DOM, as a supervisor does.
 *
 * Security: every string from the API is untrusted (callers and the LLM write some of it), so it
 * only ever reaches the DOM through textContent / attributes, never parsed as HTML. The token
 * lives in sessionStorage and is sent to this origin only.
 */

import { ApiError, api as request, fetchBlob, fetchSnapshot, watchReachability } from './api.js';
import { createConsole } from './console.js';
import { createDashboard } from './dashboard.js';
import {
  agentText, analysisLines, campaignText, contactText, dirText, el, fmtClock, fmtDateTime, fmtShortDateTime, human,
  isActive, matchesSearch, remoteNumber, setOutcome, setProp, setStatus, setText, shownNumber,
} from './format.js';

// ---- Constants -------------------------------------------------------------------------------

const TOKEN_KEY = 'asterai.token';
const STATUS_RANK = { initiated: 0, ringing: 1, in_progress: 2 }; // every end status ranks 3
const WAITING_LABEL = { stt: 'STT', responder: 'LLM', tts: 'TTS' };
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
const UNREACHABLE_AFTER_MS = 5000;
const HISTORY_LIMIT = 100;
const SESSION_ENDED_CAP = 300;  // calls that ended while we watched, kept for History
const LATENCY_SCALE_MS = 4000;  // a latency bar spans the full width at this total
const SEGMENTS = [
  ['endpoint', 'endpoint', 'seg-endpoint'],
  ['stt', 'STT', 'seg-stt'],
  ['llm_first', 'LLM first sentence', 'seg-llm'],
  ['tts_first', 'TTS first audio', 'seg-tts'],
];
/** Field names of a Call as the REST API spells them (used for merging and JSON export). */
const CALL_FIELDS = ['id', 'org', 'direction', 'from', 'to', 'channel', 'campaign_id',
  'contact_id', 'contact_name', 'campaign_name', 'status', 'status_reason', 'outcome',
  'outcome_reason', 'started_at', 'answered_at', 'ended_at', 'duration_s', 'transcript',
  'emotion', 'intent_score', 'agent', 'agent_version', 'recordings', 'recording_url', 'analysis',
  'purged_at'];

// ---- State ----------------------------------------------------------------------------------
// Reset in place on sign-out, never replaced.

const state = {
  org: null,
  lastEventId: 0,     // highest event id applied
  applied: 0,         // number of events applied
  calls: new Map(),   // call id -> call state (see newCall)
};

/** Everything about the running session that is not call data. */
const session = {
  token: null,
  epoch: 0,           // bumped on sign-in/out; stale async work compares and gives up
  ws: null,
  attempt: 0,         // consecutive failed feed connections, drives the backoff
  reconnectTimer: 0,
  unreachableTimer: 0,
  feed: 'connecting', // connecting | live | reconnecting
  feedDown: false,    // disconnected for more than UNREACHABLE_AFTER_MS
  restDown: false,    // the last REST request could not reach the daemon
  openId: null,       // call shown in #call-view
  openEpoch: 0,       // bumped on each openCall, guards late detail responses
  revealed: new Set(),        // call ids whose full number is shown
  sessionEnded: [],           // ids of calls that ended during this session, newest last
  history: { fetched: [], controller: null, failed: false }, // fetched: ids from the last query
};

function newCall(id) {
  return {
    id, org: null, direction: null, from: null, to: null, channel: null,
    campaign_id: null, contact_id: null, contact_name: null, campaign_name: null,
    status: 'initiated', status_reason: null, outcome: null, outcome_reason: null,
    started_at: null, answered_at: null, ended_at: null, duration_s: null,
    transcript: null, emotion: null, intent_score: null, agent: null, agent_version: null,
    recordings: null,     // the whole-call recordings (GET v1/calls/{id})
    recording_url: null,  // where the available one downloads
    intent: null,         // intent of the newest turn
    waiting: null,        // 'stt' | 'responder' | 'tts' | null
    turnCount: 0,
    turns: new Map(),     // turn number -> turn
    turnNumbers: [],      // applied turn numbers, ascending
    lastTurn: -1,
    turnsLoaded: false,   // GET v1/calls/{id} merged
    startedMs: NaN,
  };
}

const rank = (s) => (s in STATUS_RANK ? STATUS_RANK[s] : 3);

function getCall(id) {
  let c = state.calls.get(id);
  if (!c) { c = newCall(id); state.calls.set(id, c); }
  return c;
}

function setStarted(c, at) {
  c.started_at = at;
  c.startedMs = Date.parse(at);
}

/** Merge a Call from the REST API. The feed may already know newer facts (statuses only move
 *  forward), so an older REST view only fills gaps. */
function mergeApiCall(raw) {
  if (!raw || typeof raw.id !== 'string') return null;
  const c = getCall(raw.id);
  const newer = rank(raw.status) >= rank(c.status);
  for (const k of CALL_FIELDS) {
    const v = raw[k];
    if (v === undefined || (v === null && c[k] != null)) continue; // never forget a known fact
    if (newer || c[k] == null) c[k] = v;
  }
  if (c.started_at) setStarted(c, c.started_at);
  if (typeof raw.turns === 'number') c.turnCount = Math.max(c.turnCount, raw.turns);
  if (Array.isArray(raw.turns)) {
    for (const t of raw.turns) addTurn(c, t, null);
    c.turnsLoaded = true;
  }
  const last = c.turns.get(c.lastTurn); // the newest turn beats the call-level summary
  if (last && last.emotion) c.emotion = last.emotion;
  if (last && last.intent) c.intent = last.intent;
  if (!state.org && typeof raw.org === 'string') setOrg(raw.org);
  return c;
}

/** Add a turn unless one with that number is already there. Returns true when added. */
function addTurn(c, t, at) {
  const n = Number(t && t.turn);
  if (!Number.isInteger(n) || n < 0 || c.turns.has(n)) return false;
  c.turns.set(n, {
    turn: n,
    caller: typeof t.caller === 'string' ? t.caller : '',
    agent: typeof t.agent === 'string' ? t.agent : '',
    emotion: t.emotion ?? null,
    intent: t.intent ?? null,
    confidence: typeof t.confidence === 'number' ? t.confidence : null,
    latency_ms: t.latency_ms && typeof t.latency_ms === 'object' ? t.latency_ms : null,
    tools: Array.isArray(t.tools) ? t.tools : [],
    interrupted: t.interrupted === true,
    at: t.at ?? at ?? null,
  });
  // Keep turnNumbers sorted; turns nearly always arrive in order, so scan from the end.
  const nums = c.turnNumbers;
  let i = nums.length;
  while (i > 0 && nums[i - 1] > n) i--;
  nums.splice(i, 0, n);
  c.turnCount = Math.max(c.turnCount, nums.length);
  if (n >= c.lastTurn) {
    c.lastTurn = n;
    if (t.emotion) c.emotion = t.emotion;
    if (t.intent) c.intent = t.intent;
  }
  return true;
}

// ---- Feed events -----------------------------------------------------------------------------

/** Apply one feed message. Events (numeric id) are applied at most once, in id order. */
function handleMessage(msg) {
  if (!msg || typeof msg !== 'object') return;
  if (typeof msg.id !== 'number') {
    if (msg.type === 'feed.ready') {
      if (typeof msg.org === 'string') setOrg(msg.org);
      session.attempt = 0; // a full replay succeeded: the next failure starts the backoff over
    } else if (msg.type === 'feed.error') {
      console.warn('asterai feed error:', msg.message || msg);
    }
    return; // unknown control messages are ignored
  }
  if (msg.id <= state.lastEventId) return; // already applied (replay overlap)
  state.lastEventId = msg.id;
  state.applied++;
  ui.conn.dataset.lastEvent = String(msg.id); // "Live · event N": for support, and for tests
  if (msg.type === 'campaign_status_update') dashboard.campaignChanged(msg.campaign);
  if (typeof msg.call_id !== 'string') return;

  const d = msg.data || {};
  const known = state.calls.has(msg.call_id);
  const c = getCall(msg.call_id);
  if (!c.started_at && msg.at) setStarted(c, msg.at);
  if (c.campaign_id == null && msg.campaign != null) c.campaign_id = msg.campaign;
  if (!c.org && msg.org) c.org = msg.org;

  switch (msg.type) {
    case 'call_started':
      c.direction = d.direction ?? c.direction;
      c.from = d.from ?? c.from;
      c.to = d.to ?? c.to;
      c.channel = d.channel ?? c.channel;
      c.campaign_id = d.campaign ?? c.campaign_id;
      c.contact_id = d.contact ?? c.contact_id;
      c.contact_name = d.contact_name ?? c.contact_name;
      c.campaign_name = d.campaign_name ?? c.campaign_name;
      if (msg.at) setStarted(c, msg.at);
      break;
    case 'call_status_update':
      if (d.status) c.status = d.status;
      if (d.reason !== undefined) c.status_reason = d.reason;
      if ('waiting' in d) c.waiting = d.waiting || null;
      if (d.status === 'in_progress' && !c.answered_at) c.answered_at = msg.at || null;
      if (!isActive(c)) noteEnded(c); // call_ended will follow with the outcome
      break;
    case 'conversation_turn':
      if (addTurn(c, d, msg.at) && session.openId === c.id) queueTurn(d.turn);
      break;
    case 'call_ended':
      if (d.status) c.status = d.status;
      c.outcome = d.outcome ?? c.outcome;
      c.outcome_reason = d.reason ?? c.outcome_reason;
      c.duration_s = d.duration_s ?? c.duration_s;
      if (typeof d.turns === 'number') c.turnCount = Math.max(c.turnCount, d.turns);
      c.ended_at = msg.at || c.ended_at;
      noteEnded(c);
      dashboard.callEnded();
      break;
    case 'call_analyzed':
      c.analysis = d;
      break;
    default:
      break; // unknown event type: counted as applied, otherwise ignored
  }
  // A call we first hear about mid-life (should not happen after a snapshot): fetch the rest.
  if (!known && msg.type !== 'call_started') fillCall(c.id);
  markCall(c.id);
}

/** A call left the active list: History shows it from now on. */
function noteEnded(c) {
  c.waiting = null;
  if (!session.sessionEnded.includes(c.id)) session.sessionEnded.push(c.id);
  if (session.sessionEnded.length > SESSION_ENDED_CAP) session.sessionEnded.shift();
  dirty.history = true;
}

/** Fetch a call we only know from events, to learn its numbers and names. */
async function fillCall(id) {
  const epoch = session.epoch;
  try {
    const raw = await api('v1/calls/' + encodeURIComponent(id));
    if (epoch !== session.epoch) return;
    mergeApiCall(raw);
    markCall(id);
    if (session.openId === id) { dirty.viewMissing = true; schedule(); }
  } catch (e) { /* best effort: the row shows what the events told us */ }
}

// ---- REST ------------------------------------------------------------------------------------

/** GET (or POST) with this session's token (see api.js). */
const api = (path, { token = session.token, signal, method, body } = {}) => request(path, { token, signal, method, body });
watchReachability((up) => setRestDown(!up));

/** Common handling of a failed REST request made while signed in. */
function restFailed(err) {
  if (err instanceof ApiError && err.kind === 'unauthorized') {
    signOut('The daemon refused the token (it may have been revoked). Sign in again.');
  } else if (err instanceof ApiError && err.kind === 'network') {
    setRestDown(true);
  }
}

// ---- Sign-in, start, sign-out ----------------------------------------------------------------

const $ = (id) => document.getElementById(id);
let ui; // element references, filled in init()
let supervision = null; // the console on the open call (console.js)

async function onSignIn(ev) {
  ev.preventDefault();
  const token = ui.tokenInput.value.trim();
  showSignInError('');
  if (!token) { showSignInError('Enter a token.'); return; }
  ui.signinButton.disabled = true;
  try {
    const snap = await fetchSnapshot(token);
    sessionStorage.setItem(TOKEN_KEY, token);
    ui.tokenInput.value = '';
    startSession(token, snap);
  } catch (e) {
    const kind = e instanceof ApiError ? e.kind : '';
    showSignInError(kind === 'unauthorized' ? 'That token was refused.'
      : kind === 'network' ? 'The asterai daemon cannot be reached. Is it running?'
        : 'Sign-in failed: ' + (e.message || 'unexpected answer') + '.');
  } finally {
    ui.signinButton.disabled = false;
  }
}

function showSignInError(text) {
  ui.signinError.textContent = text;
  ui.signinError.hidden = !text;
}

function showSignedIn(yes) {
  ui.signinView.hidden = yes;
  ui.app.hidden = !yes;
  ui.conn.hidden = !yes;
  ui.signout.hidden = !yes;
  if (!yes) ui.tokenInput.focus();
}

/** Begin a session. With a snapshot (from sign-in) we go straight on; without one (a reload
 *  with a stored token) we fetch it, retrying with backoff while the daemon is unreachable. */
async function startSession(token, snap) {
  session.token = token;
  const epoch = ++session.epoch;
  showSignedIn(true);
  setFeedState('connecting');
  let attempt = 0;
  while (!snap) {
    try {
      snap = await fetchSnapshot(token);
    } catch (e) {
      if (epoch !== session.epoch) return;
      restFailed(e);
      if (e instanceof ApiError && e.kind === 'unauthorized') return;
      await sleep(backoffDelay(attempt++));
      if (epoch !== session.epoch) return;
    }
  }
  if (epoch !== session.epoch) return;
  setRestDown(false);
  for (const raw of snap.calls) { const c = mergeApiCall(raw); if (c) markCall(c.id); }
  state.lastEventId = Math.max(state.lastEventId, snap.lastEventId);
  ui.conn.dataset.lastEvent = String(state.lastEventId);
  connectFeed();
  loadHistory();
  loadFilterChoices();
  dashboard.start();
}

function signOut(message) {
  session.epoch++;
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = null;
  closeFeed();
  if (session.history.controller) session.history.controller.abort();
  // Forget everything.
  dashboard.stop();
  showView('calls');
  delete ui.conn.dataset.lastEvent;
  state.org = null; state.lastEventId = 0; state.applied = 0; state.calls.clear();
  session.revealed.clear(); session.sessionEnded = [];
  session.history = { fetched: [], controller: null, failed: false };
  session.feedDown = false; session.restDown = false; session.attempt = 0;
  closeCall();
  activeRows.clear(); historyRows.clear();
  ui.active.replaceChildren(); ui.history.replaceChildren();
  ui.org.textContent = '';
  clearDirty();
  renderCount(); renderHealth();
  ui.historyEmpty.hidden = true;
  ui.historyStatus.textContent = '';
  showSignedIn(false);
  showSignInError(message || '');
}

// ---- The feed connection ---------------------------------------------------------------------

function connectFeed() {
  const epoch = session.epoch;
  const url = new URL('v1/feed', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '?token=' + encodeURIComponent(session.token) + '&since=' + state.lastEventId;
  let ws;
  try { ws = new WebSocket(url.href); } catch (e) { scheduleReconnect(false); return; }
  session.ws = ws;
  let opened = false;
  ws.onopen = () => { opened = true; };
  ws.onmessage = (e) => {
    if (epoch !== session.epoch || session.ws !== ws) return;
    if (session.feed !== 'live') {
      setFeedState('live');
      if (session.history.failed) loadHistory();
    }
    let msg;
    try { msg = JSON.parse(e.data); } catch (err) { return; }
    handleMessage(msg);
  };
  ws.onclose = (e) => {
    if (epoch !== session.epoch || session.ws !== ws) return;
    session.ws = null;
    if (e.code >= 4000) console.info('asterai feed closed:', e.code, e.reason);
    scheduleReconnect(opened);
  };
  ws.onerror = () => { /* a close event follows; it does the work */ };
}

function closeFeed() {
  clearTimeout(session.reconnectTimer);
  clearTimeout(session.unreachableTimer);
  session.unreachableTimer = 0;
  const ws = session.ws;
  session.ws = null;
  if (!ws) return;
  ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
  try { ws.close(1000); } catch (e) { /* already closing */ }
}

/** 0.5 s doubling to 10 s, with ±25 % jitter so many supervisors do not reconnect in step. */
function backoffDelay(attempt) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 10));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

function scheduleReconnect(hadOpened) {
  const epoch = session.epoch;
  setFeedState('reconnecting');
  if (!session.unreachableTimer) {
    session.unreachableTimer = setTimeout(() => {
      session.unreachableTimer = 0;
      if (session.feed !== 'live') { session.feedDown = true; renderHealth(); }
    }, UNREACHABLE_AFTER_MS);
  }
  // A browser cannot see why an upgrade failed. If the socket never opened, ask the REST API:
  // a 401 means the token was revoked and retrying forever would be pointless.
  if (!hadOpened) {
    api('v1/calls?active=true&limit=1')
      .catch((e) => { if (epoch === session.epoch) restFailed(e); });
  }
  clearTimeout(session.reconnectTimer);
  session.reconnectTimer = setTimeout(() => {
    if (epoch === session.epoch) connectFeed();
  }, backoffDelay(session.attempt++));
}

function setFeedState(s) {
  session.feed = s;
  if (s === 'live') {
    clearTimeout(session.unreachableTimer);
    session.unreachableTimer = 0;
    session.feedDown = false;
    session.restDown = false; // the daemon answers
  }
  renderHealth();
}

function setRestDown(down) {
  if (session.restDown === down) return;
  session.restDown = down;
  renderHealth();
}

function setOrg(org) {
  state.org = org;
  if (ui) ui.org.textContent = org;
}

const CONN_TEXT = {
  connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…',
  unreachable: 'Unreachable',
};

function renderHealth() {
  if (!ui) return;
  const signedIn = session.token !== null;
  const unreachable = signedIn && (session.feedDown || session.restDown);
  const s = unreachable ? 'unreachable' : session.feed;
  ui.conn.dataset.state = s;
  ui.connText.textContent = CONN_TEXT[s];
  ui.banner.hidden = !unreachable;
}

// ---- Render scheduling -----------------------------------------------------------------------
// State changes mark things dirty; one animation frame applies them all.
// calls: ids whose rows need an update; view: the open call's header; viewTurns: turn numbers
// to add to the open call; viewMissing: add any of its turns not shown yet.
const dirty = {
  calls: new Set(), history: false, view: false, viewTurns: new Set(), viewMissing: false,
};
let frame = 0;

function schedule() { if (!frame) frame = requestAnimationFrame(flush); }
function markCall(id) {
  dirty.calls.add(id);
  if (id === session.openId) dirty.view = true;
  schedule();
}
function queueTurn(n) { dirty.viewTurns.add(Number(n)); schedule(); }
function clearDirty() {
  dirty.calls.clear(); dirty.viewTurns.clear();
  dirty.history = dirty.view = dirty.viewMissing = false;
}

function flush() {
  frame = 0;
  let countChanged = false;
  for (const id of dirty.calls) {
    const c = state.calls.get(id);
    if (c && isActive(c)) { countChanged = upsertActiveRow(c) || countChanged; }
    else countChanged = removeActiveRow(id) || countChanged;
    const h = historyRows.get(id);
    if (c && h) updateHistoryRow(h, c);
  }
  if (countChanged) renderCount();
  if (dirty.history) renderHistory();
  if (session.openId) {
    const c = state.calls.get(session.openId);
    if (c) {
      if (dirty.view) renderCallHead(c);
      if (dirty.viewMissing) appendTurns(c, c.turnNumbers);
      else if (dirty.viewTurns.size) appendTurns(c, dirty.viewTurns);
    }
  }
  clearDirty();
}

// ---- Page-specific formatting ---------------------------------------------------------------

const numberOf = (c, which) => shownNumber(c, which, session.revealed.has(c.id));
const waitingText = (w) => 'waiting on ' + (WAITING_LABEL[w] || String(w).toUpperCase());
/** The after-call reading of the whole call: how likely the caller meant to go on (0–1). */
const analysisText = (c) => (typeof c.intent_score === 'number' ? c.intent_score.toFixed(2) : '—');
const moodText = (c) => [c.emotion, c.intent].filter(Boolean).map(human).join(' · ') || '—';

function fmtDuration(c) {
  if (typeof c.duration_s === 'number') return fmtClock(c.duration_s * 1000);
  if (!Number.isFinite(c.startedMs)) return '—';
  if (isActive(c)) return fmtClock(Date.now() - c.startedMs);
  const end = Date.parse(c.ended_at);
  return Number.isFinite(end) ? fmtClock(end - c.startedMs) : '—';
}

function setDir(node, c) {
  setText(node, dirText(c));
  setProp(node, 'title', c.direction || 'direction unknown');
}

/** The two numbers of a row: the remote party's is a button (masked until clicked). */
function setNumbers(r, c) {
  const remote = remoteNumber(c);
  for (const which of ['from', 'to']) {
    const node = r[which];
    setText(node, numberOf(c, which));
    const isRemote = !!c[which] && c[which] === remote;
    node.classList.toggle('number', isRemote);
    node.classList.toggle('ours', !isRemote);
    setProp(node, 'title', isRemote ? 'Show or hide the full number' : (which === 'to' ? 'the number called' : ''));
  }
}

// ---- Active calls list -----------------------------------------------------------------------

const activeRows = new Map(); // call id -> { row, dir, from, to, contact, campaign, status, ... }
const ACTIVE_FIELDS = ['dir', 'from', 'to', 'contact', 'campaign', 'status-cell', 'mood', 'duration'];

/** Create or update the row of an active call. Returns true when a row was added. */
function upsertActiveRow(c) {
  let r = activeRows.get(c.id);
  const added = !r;
  if (added) {
    r = buildRow('call-row', c.id, ACTIVE_FIELDS);
    r.status = el('span', 'status');
    r.waiting = el('span', 'badge waiting');
    r['status-cell'].append(r.status, r.waiting);
    r.row.classList.toggle('selected', c.id === session.openId);
    activeRows.set(c.id, r);
    insertActive(r.row, c);
  }
  setDir(r.dir, c);
  setNumbers(r, c);
  setText(r.contact, contactText(c));
  setText(r.campaign, campaignText(c));
  setText(r.duration, fmtDuration(c));
  setText(r.mood, moodText(c));
  setStatus(r.status, c.status);
  setProp(r.waiting, 'hidden', !c.waiting);
  if (c.waiting) setText(r.waiting, waitingText(c.waiting));
  setProp(r.row, 'hidden', !matchesSearch(c, activeView.filter));
  return added;
}

function removeActiveRow(id) {
  const r = activeRows.get(id);
  if (!r) return false;
  r.row.remove();
  activeRows.delete(id);
  return true;
}

/** How the active list is sorted and filtered (the controls above it). */
const activeView = { sort: 'newest', filter: '' };
const STATUS_ORDER = { in_progress: 0, ringing: 1, initiated: 2 };
const ACTIVE_ORDER = {
  newest: (a, b) => (b.startedMs || 0) - (a.startedMs || 0),
  oldest: (a, b) => (a.startedMs || 0) - (b.startedMs || 0),
  status: (a, b) => (STATUS_ORDER[a.status] ?? 3) - (STATUS_ORDER[b.status] ?? 3)
    || (b.startedMs || 0) - (a.startedMs || 0),
  campaign: (a, b) => campaignText(a).localeCompare(campaignText(b))
    || (b.startedMs || 0) - (a.startedMs || 0),
};

/** Put a new row where the order wants it: scanning from the top is cheap, since a new call
 *  is almost always the newest. */
function insertActive(row, c) {
  const order = ACTIVE_ORDER[activeView.sort];
  let before = ui.active.firstElementChild;
  while (before) {
    const other = state.calls.get(before.dataset.callId);
    if (!other || order(c, other) <= 0) break;
    before = before.nextElementSibling;
  }
  ui.active.insertBefore(row, before);
}

/** The sort or the filter changed: lay the whole list out again. */
function relayoutActive() {
  activeView.sort = ui.activeSort.value in ACTIVE_ORDER ? ui.activeSort.value : 'newest';
  activeView.filter = ui.activeFilter.value.trim();
  const calls = [...activeRows.keys()].map((id) => state.calls.get(id)).filter(Boolean);
  calls.sort(ACTIVE_ORDER[activeView.sort]);
  for (const c of calls) {
    const r = activeRows.get(c.id);
    r.row.hidden = !matchesSearch(c, activeView.filter);
    ui.active.append(r.row);
  }
  renderCount();
}

/** Build a row <li> with one span per named field; numbers are buttons (reveal toggle). */
function buildRow(cls, id, fields) {
  const row = el('li', 'row ' + cls);
  row.dataset.callId = id;
  row.tabIndex = -1;
  const r = { row };
  for (const f of fields) {
    const node = f === 'from' || f === 'to' ? el('button', f) : el('span', f);
    if (node.tagName === 'BUTTON') { node.type = 'button'; node.tabIndex = -1; }
    r[f] = node;
    row.append(node);
  }
  return r;
}

function renderCount() {
  const n = activeRows.size;
  let shown = 0;
  for (const r of activeRows.values()) if (!r.row.hidden) shown++;
  ui.activeCount.textContent = shown === n ? String(n) : `${shown} of ${n}`;
  ui.activeEmpty.hidden = shown > 0;
  ui.activeEmpty.textContent = n ? 'No active call matches the filter.' : 'No calls in progress.';
  rovingFocus(ui.active);
}

/** The one timer: running durations of active calls (and of the open call). */
function tick() {
  for (const [id, r] of activeRows) {
    const c = state.calls.get(id);
    if (c) setText(r.duration, fmtDuration(c));
  }
  const open = session.openId && state.calls.get(session.openId);
  if (open && isActive(open)) setText(ui.cvDuration, fmtDuration(open));
}

// ---- History ---------------------------------------------------------------------------------

const historyRows = new Map(); // call id -> row refs
const HISTORY_FIELDS = ['dir', 'when', 'from', 'to', 'contact', 'campaign', 'status-cell', 'duration'];

/** A date input's local midnight (plus `days`), or null when empty. */
function dayStart(input, days) {
  if (!input.value) return null;
  const [y, m, d] = input.value.split('-').map(Number);
  const t = new Date(y, m - 1, d + days);
  return Number.isNaN(t.getTime()) ? null : t;
}

function currentFilters() {
  return {
    q: ui.filterQ.value.trim(),
    since: dayStart(ui.filterFrom, 0),
    until: dayStart(ui.filterTo, 1),
    status: ui.filterStatus.value,
    outcome: ui.filterOutcome.value,
    campaign: ui.filterCampaign.value,
    agent: ui.filterAgent.value,
  };
}

/** The same filters as the API applies, for calls that ended while the page watched. */
function matchesFilters(c, f) {
  if (isActive(c)) return false;
  if (f.status && c.status !== f.status) return false;
  if (f.outcome && c.outcome !== f.outcome) return false;
  if (f.campaign && String(c.campaign_id) !== f.campaign) return false;
  if (f.agent && c.agent !== f.agent) return false;
  if ((f.since || f.until) && !Number.isFinite(c.startedMs)) return false;
  if (f.since && c.startedMs < f.since.getTime()) return false;
  if (f.until && c.startedMs >= f.until.getTime()) return false;
  return matchesSearch(c, f.q);
}

/** Re-query the REST API with the current filters (aborting a query still in flight). */
async function loadHistory() {
  const f = currentFilters();
  if (f.since && f.until && f.until <= f.since) {
    ui.historyStatus.textContent = 'The "to" date is before the "from" date.';
    return;
  }
  const h = session.history;
  if (h.controller) h.controller.abort();
  const controller = new AbortController();
  h.controller = controller;
  const params = new URLSearchParams({ limit: String(HISTORY_LIMIT) });
  if (f.q) params.set('q', f.q);
  if (f.since) params.set('since', f.since.toISOString());
  if (f.until) params.set('until', f.until.toISOString());
  if (f.status) params.set('status', f.status);
  if (f.outcome) params.set('outcome', f.outcome);
  if (f.campaign) params.set('campaign', f.campaign);
  if (f.agent) params.set('agent', f.agent);
  ui.historyStatus.textContent = 'Loading…';
  try {
    const body = await api('v1/calls?' + params, { signal: controller.signal });
    if (h !== session.history || h.controller !== controller) return;
    h.fetched = [];
    for (const raw of body.calls || []) {
      const c = mergeApiCall(raw);
      if (c) { h.fetched.push(c.id); markCall(c.id); }
    }
    h.failed = false;
    ui.historyStatus.textContent = '';
  } catch (e) {
    if (e.name === 'AbortError' || h !== session.history || h.controller !== controller) return;
    h.failed = true;
    ui.historyStatus.textContent = e.kind === 'network'
      ? 'History is unavailable while the daemon cannot be reached.'
      : 'History could not be loaded (' + e.message + ').';
    restFailed(e);
  } finally {
    if (h.controller === controller) h.controller = null;
  }
  dirty.history = true;
  schedule();
}

/** The campaign and agent choices of the filters, by name (the API filters by id / name). */
async function loadFilterChoices() {
  const epoch = session.epoch;
  const fill = (select, items) => {
    const keep = select.value;
    const options = [el('option', null, 'any')];
    options[0].value = '';
    for (const [value, label] of items) {
      const o = el('option', null, label);
      o.value = value;
      options.push(o);
    }
    select.replaceChildren(...options);
    select.value = items.some(([v]) => v === keep) ? keep : '';
  };
  try {
    const [campaigns, agents] = await Promise.all([api('v1/campaigns'), api('v1/agents')]);
    if (epoch !== session.epoch) return;
    fill(ui.filterCampaign, (campaigns.campaigns || []).map((c) => [String(c.id), c.name]));
    fill(ui.filterAgent, (agents.agents || []).map((a) => [a.name, a.name]));
  } catch (e) {
    if (epoch === session.epoch) restFailed(e);
  }
}

/** Lay out the History list: fetched + ended-this-session calls matching the filters, newest
 *  end first. Existing row elements are reused; calls no longer needed are forgotten. */
function renderHistory() {
  const f = currentFilters();
  const seen = new Set();
  const list = [];
  for (const id of session.history.fetched.concat(session.sessionEnded)) {
    const c = state.calls.get(id);
    if (c && !seen.has(id) && matchesFilters(c, f)) { seen.add(id); list.push(c); }
  }
  const key = (c) => Date.parse(c.ended_at || c.started_at) || 0;
  list.sort((a, b) => key(b) - key(a));

  const rows = list.map((c) => {
    let r = historyRows.get(c.id);
    if (!r) {
      r = buildRow('history-row', c.id, HISTORY_FIELDS);
      r.status = el('span', 'status');
      r.outcome = el('span', 'outcome-badge');
      r['status-cell'].append(r.status, r.outcome);
      historyRows.set(c.id, r);
    }
    updateHistoryRow(r, c);
    r.row.classList.toggle('selected', c.id === session.openId);
    return r.row;
  });
  for (const id of historyRows.keys()) if (!seen.has(id)) historyRows.delete(id);
  ui.history.replaceChildren(...rows);
  ui.historyEmpty.hidden = rows.length > 0 || session.history.failed;
  rovingFocus(ui.history);
  pruneCalls();
}

function updateHistoryRow(r, c) {
  setDir(r.dir, c);
  setNumbers(r, c);
  setText(r.contact, contactText(c));
  setText(r.when, fmtShortDateTime(c.started_at));
  r.when.title = fmtDateTime(c.started_at);
  setText(r.campaign, campaignText(c));
  setText(r.duration, fmtDuration(c));
  setStatus(r.status, c.status);
  setOutcome(r.outcome, c.outcome);
}

/** Forget ended calls that are neither listed nor open, so a long session stays small. */
function pruneCalls() {
  const keep = new Set(session.history.fetched.concat(session.sessionEnded));
  for (const [id, c] of state.calls) {
    if (!isActive(c) && !keep.has(id) && id !== session.openId) {
      state.calls.delete(id);
      session.revealed.delete(id);
    }
  }
}

// ---- Keyboard --------------------------------------------------------------------------------
// Each list is one tab stop (a "roving" tabindex): arrows move between its rows, Home and End
// jump, Enter or Space opens; "/" focuses the search, Escape closes the open call.

function visibleRows(list) {
  return [...list.children].filter((r) => !r.hidden);
}

/** Keep exactly one row of the list reachable with Tab: the focused one, else the first. */
function rovingFocus(list) {
  const rows = visibleRows(list);
  const current = rows.find((r) => r.tabIndex === 0) || rows[0];
  for (const r of list.children) r.tabIndex = r === current ? 0 : -1;
}

function moveFocus(list, from, step) {
  const rows = visibleRows(list);
  if (!rows.length) return;
  let i = rows.indexOf(from);
  if (step === 'home') i = 0;
  else if (step === 'end') i = rows.length - 1;
  else i = Math.max(0, Math.min(rows.length - 1, (i < 0 ? 0 : i + step)));
  for (const r of list.children) r.tabIndex = -1;
  rows[i].tabIndex = 0;
  rows[i].focus();
}

function onGlobalKey(e) {
  const typing = e.target.closest && e.target.closest('input, select, textarea');
  if (e.key === '/' && !typing && !ui.app.hidden) {
    e.preventDefault();
    showView('calls');
    ui.filterQ.focus();
  } else if (e.key === 'Escape' && session.openId && !typing) {
    const id = session.openId;
    closeCall();
    const row = (activeRows.get(id) || historyRows.get(id) || {}).row;
    if (row) row.focus();
  }
}

// ---- One call --------------------------------------------------------------------------------

const view = { turnEls: new Map(), stick: true };

function openCall(id) {
  const c = state.calls.get(id);
  if (!c) return;
  session.openId = id;
  const epoch = ++session.openEpoch;
  for (const [rid, r] of activeRows) r.row.classList.toggle('selected', rid === id);
  for (const [rid, r] of historyRows) r.row.classList.toggle('selected', rid === id);
  ui.callEmpty.hidden = true;
  ui.callDetail.hidden = false;
  view.stick = isActive(c); // live calls follow the newest turn; ended ones open at the top
  ui.newTurns.hidden = true;
  ui.turnsStatus.textContent = '';
  renderCallHead(c);
  view.turnEls.clear();
  ui.turns.replaceChildren();
  appendTurns(c, c.turnNumbers);
  ui.turns.scrollTop = view.stick ? ui.turns.scrollHeight : 0;
  if (window.matchMedia && window.matchMedia('(max-width: 900px)').matches) {
    ui.callView.scrollIntoView({ block: 'start' });
  }
  if (!c.turnsLoaded) loadCallDetail(id, epoch);
}

async function loadCallDetail(id, epoch) {
  const sessionEpoch = session.epoch;
  ui.turnsStatus.textContent = 'Loading the conversation…';
  try {
    const raw = await api('v1/calls/' + encodeURIComponent(id));
    if (sessionEpoch !== session.epoch) return;
    mergeApiCall(raw);
    markCall(id);
    if (epoch !== session.openEpoch) return;
    ui.turnsStatus.textContent = '';
    dirty.viewMissing = true; // turns that came from the feed meanwhile are kept as they are
    schedule();
  } catch (e) {
    if (sessionEpoch !== session.epoch || epoch !== session.openEpoch) return;
    ui.turnsStatus.textContent = e.status === 404 ? 'This call was not found.'
      : e.kind === 'network' ? 'The conversation cannot be loaded: the daemon is unreachable.'
        : 'The conversation could not be loaded (' + e.message + ').';
    restFailed(e);
  }
}

// ---- Recording ------------------------------------------------------------------------------
// The file needs the token in a header, so it is fetched, then played from a blob: URL (the CSP
// allows media-src blob:). One at a time: the URL is revoked when another call opens.

const recording = { url: null, callId: null, epoch: 0 };

function recordingText(c) {
  const list = Array.isArray(c.recordings) ? c.recordings : [];
  if (!list.length) return c.turnsLoaded ? 'none' : '—';
  const r = list[list.length - 1];
  const consent = r.consent_announced ? 'consent announced'
    : r.consent_required ? 'consent required, not announced' : 'no consent announcement';
  const size = typeof r.duration_ms === 'number' ? ' · ' + (r.duration_ms / 1000).toFixed(1) + ' s' : '';
  const why = r.status_reason ? ' (' + r.status_reason + ')' : '';
  return human(r.status) + why + size + ' · ' + consent;
}

function resetRecording() {
  recording.epoch++;
  if (recording.url) URL.revokeObjectURL(recording.url);
  recording.url = null;
  recording.callId = null;
  ui.recordingAudio.pause();
  ui.recordingAudio.removeAttribute('src');
  ui.recordingAudio.hidden = true;
  ui.recordingStatus.textContent = '';
}

function renderRecording(c) {
  setText(ui.cvRecording, recordingText(c));
  const playable = typeof c.recording_url === 'string' && c.recording_url.startsWith('/v1/calls/');
  if (recording.callId !== null && recording.callId !== c.id) resetRecording();
  ui.recordingBox.hidden = !playable;
  ui.recordingLoad.hidden = !playable || recording.callId === c.id;
}

async function loadRecording() {
  const c = session.openId && state.calls.get(session.openId);
  if (!c || typeof c.recording_url !== 'string') return;
  resetRecording();
  const epoch = recording.epoch;
  recording.callId = c.id;
  ui.recordingLoad.hidden = true;
  ui.recordingStatus.textContent = 'Loading the recording…';
  try {
    const blob = await fetchBlob(c.recording_url.slice(1), { token: session.token });
    if (epoch !== recording.epoch) return;
    recording.url = URL.createObjectURL(blob);
    ui.recordingAudio.src = recording.url;
    ui.recordingAudio.hidden = false;
    ui.recordingStatus.textContent = '';
  } catch (e) {
    if (epoch !== recording.epoch) return;
    recording.callId = null;
    ui.recordingLoad.hidden = false;
    ui.recordingStatus.textContent = 'The recording could not be loaded (' + e.message + ').';
    if (e.kind === 'network' || e.kind === 'unauthorized') restFailed(e);
  }
}

function closeCall() {
  resetRecording();
  if (supervision) supervision.show(null, false);
  session.openId = null;
  session.openEpoch++;
  view.turnEls.clear();
  ui.turns.replaceChildren();
  ui.newTurns.hidden = true;
  ui.turnsStatus.textContent = '';
  ui.callDetail.hidden = true;
  ui.callEmpty.hidden = false;
  for (const r of activeRows.values()) r.row.classList.remove('selected');
  for (const r of historyRows.values()) r.row.classList.remove('selected');
}

function renderCallHead(c) {
  setDir(ui.cvDirection, c);
  setText(ui.cvNumber, numberOf(c, c.direction === 'outbound' ? 'to' : 'from'));
  setText(ui.cvContact, contactText(c));
  setStatus(ui.cvStatus, c.status);
  setOutcome(ui.cvOutcomeBadge, c.outcome);
  setText(ui.cvFrom, numberOf(c, 'from'));
  setText(ui.cvTo, numberOf(c, 'to'));
  setText(ui.cvAgent, agentText(c));
  setText(ui.cvId, c.id);
  setText(ui.cvAnalysis, analysisText(c));
  renderAfterCall(c);
  ui.cvWaiting.hidden = !c.waiting;
  if (c.waiting) setText(ui.cvWaiting, waitingText(c.waiting));
  setText(ui.cvCampaign, campaignText(c));
  setText(ui.cvStarted, fmtDateTime(c.started_at));
  setText(ui.cvAnswered, fmtDateTime(c.answered_at));
  setText(ui.cvEnded, fmtDateTime(c.ended_at));
  setText(ui.cvDuration, fmtDuration(c));
  setText(ui.cvOutcome, human(c.outcome));
  // The outcome's reason and the status's are often the same words: say them once.
  const reasons = [...new Set([c.outcome_reason, c.status_reason].filter(Boolean))];
  if (c.purged_at) reasons.push('words and recording purged by retention ' + fmtDateTime(c.purged_at));
  setText(ui.cvReason, reasons.length ? reasons.join(' · ') : '—');
  renderRecording(c);
  // Exports need the turns, so wait for the detail (an active call's may still grow).
  ui.exportJson.disabled = ui.exportText.disabled = !c.turnsLoaded;
  if (supervision) supervision.show(c.id, isActive(c));
}

/** The after-call analysis in the call view, one part a line (hidden until there is one). */
function renderAfterCall(c) {
  const lines = analysisLines(c.analysis);
  const key = JSON.stringify(lines);
  ui.cvAfterCallRow.hidden = lines.length === 0;
  if (ui.cvAfterCall.dataset.key === key) return;
  ui.cvAfterCall.dataset.key = key;
  ui.cvAfterCall.replaceChildren(...lines.map(([label, text]) => {
    const p = el('p', 'analysis-part');
    p.append(el('strong', '', label + ': '), text);
    return p;
  }));
}

/** Insert turns (by number) into the open conversation, keeping turn-number order. */
function appendTurns(c, numbers) {
  const box = ui.turns;
  const stick = view.stick;
  let added = false;
  for (const n of numbers) {
    const t = c.turns.get(n);
    if (!t || view.turnEls.has(n)) continue;
    const node = buildTurn(t);
    view.turnEls.set(n, node);
    let after = box.lastElementChild; // usually the newest turn comes last
    while (after && Number(after.dataset.turn) > n) after = after.previousElementSibling;
    box.insertBefore(node, after ? after.nextElementSibling : box.firstElementChild);
    added = true;
  }
  if (!added) return;
  if (stick) box.scrollTop = box.scrollHeight;
  else if (isActive(c)) ui.newTurns.hidden = false;
}

function buildTurn(t) {
  const group = el('div', 'turn');
  group.dataset.turn = String(t.turn);
  if (t.caller) {
    const b = el('div', 'bubble caller');
    const meta = [['Caller', ''], ['turn ' + t.turn, '']];
    if (t.emotion) meta.push([human(t.emotion), 'emotion']);
    if (t.intent) meta.push([human(t.intent), 'intent']);
    if (t.confidence != null) meta.push([Math.round(t.confidence * 100) + '%', 'confidence']);
    b.append(buildMeta(meta), el('p', 'text', t.caller));
    group.append(b);
  }
  const a = el('div', 'bubble agent');
  const meta = [['Agent', ''], ['turn ' + t.turn, '']];
  if (t.interrupted) meta.push(['talked over', 'the caller talked over this answer: this is what they heard']);
  a.append(buildMeta(meta), el('p', 'text', t.agent || '…'));
  if (t.tools && t.tools.length) a.append(buildTools(t.tools));
  const bar = buildLatency(t.latency_ms);
  if (bar) a.append(bar);
  group.append(a);
  return group;
}

/** The tools the model called in a turn: name, arguments and what asterai did, as text. */
function buildTools(tools) {
  const list = el('ul', 'tools');
  list.setAttribute('aria-label', 'Tool calls');
  const brief = (v) => {
    const text = typeof v === 'string' ? v : JSON.stringify(v);
    return text && text.length > 160 ? text.slice(0, 157) + '…' : (text || '');
  };
  for (const tool of tools) {
    const li = el('li', 'tool');
    li.append(el('span', 'tool-name', String(tool && tool.name || 'tool')),
      el('code', 'tool-args', brief(tool && tool.arguments)),
      el('span', 'tool-arrow', '→'),
      el('code', 'tool-result', brief(tool && tool.result)));
    list.append(li);
  }
  return list;
}

function buildMeta(items) {
  const m = el('div', 'meta');
  for (const [text, title] of items) {
    const s = el('span', null, text);
    if (title) s.title = title;
    m.append(s);
  }
  return m;
}

/** A stacked bar: the track's width is the total against LATENCY_SCALE_MS, each segment's
 *  share of the track its part of the total. */
function buildLatency(lat) {
  if (!lat) return null;
  const ms = (k) => (Number.isFinite(lat[k]) && lat[k] > 0 ? lat[k] : 0);
  const parts = SEGMENTS.map(([k]) => ms(k));
  const sum = parts.reduce((a, b) => a + b, 0);
  const total = ms('total') || sum;
  if (!total) return null;
  const wrap = el('div', 'latency');
  const title = SEGMENTS.map(([, label], i) => `${label} ${parts[i]} ms`).join(' · ')
    + ` · total ${total} ms`;
  wrap.title = title;
  wrap.setAttribute('role', 'img');
  wrap.setAttribute('aria-label', 'Latency: ' + title);
  const track = el('div', 'track');
  track.style.width = (Math.min(1, total / LATENCY_SCALE_MS) * 100).toFixed(1) + '%';
  const scale = Math.max(total, sum);
  SEGMENTS.forEach(([, label, cls], i) => {
    if (!parts[i]) return;
    const seg = el('span', 'seg ' + cls);
    seg.style.width = ((parts[i] / scale) * 100).toFixed(2) + '%';
    seg.title = `${label}: ${parts[i]} ms`;
    track.append(seg);
  });
  const box = el('div', 'latency-box'); // the track's percentage width is of this box
  box.append(track);
  wrap.append(box, el('span', 'total', total + ' ms'));
  return wrap;
}

function onTurnsScroll() {
  const box = ui.turns;
  view.stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 24;
  if (view.stick) ui.newTurns.hidden = true;
}

// ---- Export ----------------------------------------------------------------------------------

function callForExport(c) {
  const out = {};
  for (const k of CALL_FIELDS) out[k] = c[k];
  out.turns = c.turnNumbers.map((n) => c.turns.get(n));
  // A reference, not the audio: it downloads with a monitor token in the header.
  if (c.recording_url) out.recording_url = location.origin + c.recording_url;
  return out;
}

function callAsText(c) {
  const oneLine = (s) => String(s || '').replace(/\s*[\r\n]+\s*/g, ' ');
  const withReason = (v, why) => (v || '—') + (why ? ' (' + oneLine(why) + ')' : '');
  const lines = [
    'asterai call ' + c.id,
    'Direction: ' + (c.direction || '—'),
    'From: ' + (c.from || '—'),
    'To: ' + (c.to || '—'),
    'Agent: ' + agentText(c),
    'Contact: ' + contactText(c),
    'Campaign: ' + campaignText(c),
    'Started: ' + (c.started_at || '—'),
    'Answered: ' + (c.answered_at || '—'),
    'Ended: ' + (c.ended_at || '—'),
    'Duration: ' + (typeof c.duration_s === 'number' ? c.duration_s + ' s' : '—'),
    'Status: ' + withReason(c.status, c.status_reason),
    'Outcome: ' + withReason(c.outcome, c.outcome_reason),
    'Recording: ' + (c.recording_url ? location.origin + c.recording_url : recordingText(c)),
    ...analysisLines(c.analysis).map(([label, text]) => label + ': ' + oneLine(text)),
    '',
  ];
  for (const n of c.turnNumbers) {
    const t = c.turns.get(n);
    if (t.caller) lines.push('Caller: ' + oneLine(t.caller));
    if (t.agent) lines.push('Agent: ' + oneLine(t.agent));
  }
  return lines.join('\n') + '\n';
}

/** Offer a download. */
function download(filename, type, content) {
  const url = URL.createObjectURL(new Blob([content], { type }));
  const a = el('a');
  a.href = url;
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function exportOpen(kind) {
  const c = session.openId && state.calls.get(session.openId);
  if (!c) return;
  const base = 'call-' + String(c.id).replace(/[^A-Za-z0-9_-]/g, '_');
  if (kind === 'json') {
    const json = JSON.stringify(callForExport(c), null, 2) + '\n';
    download(base + '.json', 'application/json', json);
  } else {
    download(base + '.txt', 'text/plain;charset=utf-8', callAsText(c));
  }
}

// ---- Wiring ----------------------------------------------------------------------------------

function toggleReveal(id) {
  if (session.revealed.has(id)) session.revealed.delete(id); else session.revealed.add(id);
  markCall(id); // re-renders the row(s) and, when it is open, the call view
}

/** One click/keyboard handler per list (event delegation), not one per row. */
function wireList(list, rowSelector) {
  list.addEventListener('click', (e) => {
    const row = e.target.closest(rowSelector);
    if (!row) return;
    if (e.target.closest('.number')) toggleReveal(row.dataset.callId);
    else openCall(row.dataset.callId);
  });
  list.addEventListener('keydown', (e) => {
    const row = e.target.closest(rowSelector);
    if (!row) return;
    const steps = { ArrowDown: 1, ArrowUp: -1, Home: 'home', End: 'end' };
    if (e.key in steps) {
      e.preventDefault();
      moveFocus(list, row, steps[e.key]);
    } else if (e.target === row && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      openCall(row.dataset.callId);
    } else if (e.target === row && e.key.toLowerCase() === 'r') {
      toggleReveal(row.dataset.callId); // "r" reveals or hides the number
    }
  });
  list.addEventListener('focusin', (e) => {
    const row = e.target.closest(rowSelector);
    if (!row) return;
    for (const r of list.children) r.tabIndex = r === row ? 0 : -1;
  });
}

/** The two views, as tabs (arrow keys move between them). */
function showView(name) {
  const calls = name === 'calls';
  ui.callsView.hidden = !calls;
  ui.campaignsView.hidden = calls;
  ui.tabCalls.setAttribute('aria-selected', String(calls));
  ui.tabCampaigns.setAttribute('aria-selected', String(!calls));
  ui.tabCalls.tabIndex = calls ? 0 : -1;
  ui.tabCampaigns.tabIndex = calls ? -1 : 0;
  dashboard.showCampaigns(!calls);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function init() {
  ui = {
    signinView: $('signin-view'), signin: $('signin'), tokenInput: $('token'),
    signinError: $('signin-error'), signinButton: document.querySelector('#signin [type=submit]'),
    app: $('app'), org: $('org'), conn: $('conn'),
    connText: document.querySelector('#conn .conn-text'),
    banner: $('banner'), signout: $('signout'),
    active: $('active'), activeCount: $('active-count'), activeEmpty: $('active-empty'),
    history: $('history'), historyEmpty: $('history-empty'), historyStatus: $('history-status'),
    filterStatus: $('filter-status'), filterOutcome: $('filter-outcome'),
    filterCampaign: $('filter-campaign'), filterAgent: $('filter-agent'), filterQ: $('filter-q'),
    filterFrom: $('filter-from'), filterTo: $('filter-to'),
    activeFilter: $('active-filter'), activeSort: $('active-sort'),
    tabCalls: $('tab-calls'), tabCampaigns: $('tab-campaigns'),
    callsView: $('calls-view'), campaignsView: $('campaigns-view'),
    cvOutcomeBadge: $('cv-outcome-badge'), cvFrom: $('cv-from'), cvTo: $('cv-to'),
    cvAgent: $('cv-agent'), cvId: $('cv-id'), cvAnalysis: $('cv-analysis'),
    cvAfterCall: $('cv-after-call'), cvAfterCallRow: $('cv-after-call-row'),
    callView: $('call-view'), callEmpty: $('call-empty'), callDetail: $('call-detail'),
    cvDirection: $('cv-direction'), cvNumber: $('cv-number'), cvContact: $('cv-contact'),
    cvStatus: $('cv-status'), cvWaiting: $('cv-waiting'), cvCampaign: $('cv-campaign'),
    cvStarted: $('cv-started'), cvAnswered: $('cv-answered'), cvEnded: $('cv-ended'),
    cvDuration: $('cv-duration'), cvOutcome: $('cv-outcome'), cvReason: $('cv-reason'),
    turns: $('turns'), newTurns: $('new-turns'), turnsStatus: $('turns-status'),
    exportJson: $('export-json'), exportText: $('export-text'), closeCall: $('close-call'),
    cvRecording: $('cv-recording'), recordingBox: $('recording-box'),
    recordingLoad: $('recording-load'), recordingAudio: $('recording-audio'),
    recordingStatus: $('recording-status'),
  };

  ui.signin.addEventListener('submit', onSignIn);
  ui.signout.addEventListener('click', () => signOut(''));
  wireList(ui.active, '.call-row');
  wireList(ui.history, '.history-row');
  ui.cvNumber.addEventListener('click', () => session.openId && toggleReveal(session.openId));
  ui.closeCall.addEventListener('click', closeCall);
  ui.recordingLoad.addEventListener('click', loadRecording);
  ui.exportJson.addEventListener('click', () => exportOpen('json'));
  ui.exportText.addEventListener('click', () => exportOpen('text'));
  ui.turns.addEventListener('scroll', onTurnsScroll, { passive: true });
  ui.newTurns.addEventListener('click', () => {
    ui.turns.scrollTop = ui.turns.scrollHeight;
    view.stick = true;
    ui.newTurns.hidden = true;
  });
  for (const f of [ui.filterStatus, ui.filterOutcome, ui.filterCampaign, ui.filterAgent,
    ui.filterFrom, ui.filterTo]) {
    f.addEventListener('change', loadHistory);
  }
  // The search asks the daemon once typing pauses, not at every key.
  let searchTimer = 0;
  ui.filterQ.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(loadHistory, 300);
  });
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); loadHistory(); });
  ui.activeFilter.addEventListener('input', relayoutActive);
  ui.activeSort.addEventListener('change', relayoutActive);
  ui.tabCalls.addEventListener('click', () => showView('calls'));
  ui.tabCampaigns.addEventListener('click', () => showView('campaigns'));
  for (const tab of [ui.tabCalls, ui.tabCampaigns]) {
    tab.addEventListener('keydown', (e) => {
      if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
      const next = tab === ui.tabCalls ? ui.tabCampaigns : ui.tabCalls;
      showView(next === ui.tabCalls ? 'calls' : 'campaigns');
      next.focus();
    });
  }
  document.addEventListener('keydown', onGlobalKey);
  dashboard = createDashboard({ request: (path, opts = {}) => api(path, opts), failed: restFailed });
  supervision = createConsole({
    ui: {
      panel: $('console'), coachForm: $('console'), listen: $('listen'), pause: $('pause-ai'),
      resume: $('resume-ai'), coachText: $('coach-text'), coachSend: $('coach-send'), status: $('console-status'),
      barge: $('barge'), takeover: $('takeover'), giveback: $('giveback'),
    },
    request: (path, opts = {}) => api(path, opts),
    token: () => session.token,
  });

  setInterval(tick, 1000);
  renderCount();

  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) startSession(token, null);
  else showSignedIn(false);
}

let dashboard; // the today strip and the campaign view, made in init()

// A module runs after the document is parsed (it is deferred), so the elements are there.
init();
