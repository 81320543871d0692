/*
 * The figures views: the "today" strip above the calls (GET v1/stats from the browser's own
 * midnight) and the campaign view (GET v1/campaigns, GET v1/campaigns/{id}/stats, pause and
 * resume). Both only show what the daemon computed (src/store/stats.rs): the page does no
 * arithmetic of its own on the figures, so it cannot disagree with the API or the CLI.
 */

import { columns, hbars, stacked } from './charts.js';
import { el, fmtDateTime, fmtPercent, fmtShortDateTime, fmtSeconds, human, setStatus, setText } from './format.js';

const TODAY_EVERY_MS = 15000;
const CAMPAIGN_EVERY_MS = 10000;
const STAGES = [
  ['endpoint', 'endpoint'], ['stt', 'STT'], ['llm_first', 'LLM first sentence'],
  ['tts_first', 'TTS first audio'], ['total', 'total'],
];
const PROGRESS = [
  ['done', 'done'], ['failed', 'failed'], ['do_not_call', 'do not call'], ['dialing', 'dialing'],
  ['pending', 'pending'],
];

/** Write a figure: the text people read, and the exact value in a <data> element. */
function figure(root, key, value, text) {
  const node = root.querySelector(`[data-figure="${key}"]`);
  if (!node) return;
  let data = node.firstElementChild;
  if (!data || data.tagName !== 'DATA') { data = el('data'); node.replaceChildren(data); }
  data.value = value == null ? '' : String(value);
  setText(data, text);
}

function outcomeRows(outcomes) {
  return Object.entries(outcomes || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([k, v]) => ({ key: k, label: human(k), values: [v] }));
}

function localMidnight() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d;
}

const hourLabel = (iso) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

/**
 * `request(path, {method, signal})` is the page's API call with its token; `failed(error)` its
 * common handling of a failed request (sign out on 401, "unreachable" on network errors).
 */
export function createDashboard({ request, failed }) {
  const $ = (id) => document.getElementById(id);
  const ui = {
    today: $('today'), todayStatus: $('today-status'), hours: $('today-hours'),
    outcomes: $('today-outcomes'), latency: $('today-latency'),
    list: $('campaign-list'), listEmpty: $('campaigns-empty'), detail: $('campaign-detail'),
    cdName: $('cd-name'), cdStatus: $('cd-status'), cdMessage: $('cd-message'),
    cdProgress: $('cd-progress'), cdOutcomes: $('cd-outcomes'), pause: $('cd-pause'),
    resume: $('cd-resume'),
  };
  const state = { timer: 0, campaignTimer: 0, soon: 0, campaignId: null, live: false, epoch: 0 };

  async function loadToday() {
    const epoch = state.epoch;
    const since = localMidnight().toISOString();
    try {
      const s = await request('v1/stats?since=' + encodeURIComponent(since));
      if (epoch !== state.epoch) return;
      renderToday(s);
      setText(ui.todayStatus, 'since ' + fmtDateTime(since));
    } catch (e) {
      if (epoch !== state.epoch) return;
      setText(ui.todayStatus, 'figures unavailable (' + e.message + ')');
      failed(e);
    }
  }

  function renderToday(s) {
    figure(ui.today, 'calls', s.calls, String(s.calls));
    figure(ui.today, 'active', s.active, String(s.active));
    figure(ui.today, 'answered', s.answered, String(s.answered));
    figure(ui.today, 'answer_rate', s.answer_rate, fmtPercent(s.answer_rate));
    figure(ui.today, 'average_handling_s', s.average_handling_s, fmtSeconds(s.average_handling_s));
    const hours = (s.by_hour || []).map((h) => ({ label: hourLabel(h.start), value: h.calls, sub: h.answered }));
    ui.hours.replaceChildren(columns(hours, { label: 'Calls per hour, answered darker', subName: 'answered' }));
    const outcomes = outcomeRows(s.outcomes);
    ui.outcomes.replaceChildren(outcomes.length ? hbars(outcomes, { label: 'Outcomes today' })
      : el('p', 'empty small', 'No outcomes yet.'));
    const lat = s.latency || {};
    const stages = STAGES.map(([k, label]) => ({
      key: k, label, values: [lat[k] && lat[k].p50, lat[k] && lat[k].p95],
    }));
    ui.latency.replaceChildren(lat.turns
      ? hbars(stages, { label: `Latency per turn stage over ${lat.turns} turns`, unit: ' ms', series: ['p50', 'p95'] })
      : el('p', 'empty small', 'No measured turns yet.'));
  }

  /** A call ended: the figures change; ask once things settle rather than per event. */
  function callEnded() {
    if (!state.live) return;
    clearTimeout(state.soon);
    state.soon = setTimeout(loadToday, 1000);
  }

  // ---- Campaigns ----

  async function loadCampaigns() {
    const epoch = state.epoch;
    try {
      const body = await request('v1/campaigns');
      if (epoch !== state.epoch) return;
      const campaigns = Array.isArray(body.campaigns) ? body.campaigns : [];
      ui.list.replaceChildren(...campaigns.map((c) => {
        const li = el('li');
        const b = el('button', 'campaign-item');
        b.type = 'button';
        b.dataset.campaignId = String(c.id);
        b.setAttribute('aria-pressed', String(c.id === state.campaignId));
        const st = el('span', 'status');
        setStatus(st, c.status);
        b.append(el('span', 'campaign-name', c.name), st);
        li.append(b);
        return li;
      }));
      ui.listEmpty.hidden = campaigns.length > 0;
      if (state.campaignId == null && campaigns.length) openCampaign(campaigns[0].id);
    } catch (e) {
      if (epoch !== state.epoch) return;
      setText(ui.cdMessage, 'Campaigns could not be loaded (' + e.message + ').');
      failed(e);
    }
  }

  function openCampaign(id) {
    state.campaignId = id;
    for (const b of ui.list.querySelectorAll('.campaign-item')) {
      b.setAttribute('aria-pressed', String(Number(b.dataset.campaignId) === id));
    }
    setText(ui.cdMessage, '');
    loadCampaign();
  }

  async function loadCampaign() {
    const id = state.campaignId;
    const epoch = state.epoch;
    if (id == null) return;
    try {
      const s = await request(`v1/campaigns/${encodeURIComponent(id)}/stats`);
      if (epoch !== state.epoch || id !== state.campaignId) return;
      renderCampaign(s);
    } catch (e) {
      if (epoch !== state.epoch || id !== state.campaignId) return;
      setText(ui.cdMessage, e.status === 404 ? 'This campaign was not found.'
        : 'The campaign\'s figures could not be loaded (' + e.message + ').');
      failed(e);
    }
  }

  function renderCampaign(s) {
    ui.detail.hidden = false;
    ui.detail.dataset.campaignId = String(s.campaign_id);
    setText(ui.cdName, s.name);
    setStatus(ui.cdStatus, s.status);
    const p = s.progress || {};
    for (const [k] of PROGRESS) figure(ui.detail, k, p[k], String(p[k] ?? '—'));
    figure(ui.detail, 'total', p.total, String(p.total ?? '—'));
    ui.cdProgress.replaceChildren(stacked(PROGRESS.map(([k, label]) => ({ key: k, label, value: p[k] || 0 })),
      { label: 'Contacts by state' }));
    figure(ui.detail, 'calls', s.calls, String(s.calls));
    figure(ui.detail, 'answered', s.answered, String(s.answered));
    figure(ui.detail, 'answer_rate', s.answer_rate, fmtPercent(s.answer_rate));
    figure(ui.detail, 'average_handling_s', s.average_handling_s, fmtSeconds(s.average_handling_s));
    figure(ui.detail, 'calls_per_hour', s.calls_per_hour, String(s.calls_per_hour));
    figure(ui.detail, 'eta', s.eta, s.eta ? fmtShortDateTime(s.eta) : '—');
    const outcomes = outcomeRows(s.outcomes);
    ui.cdOutcomes.replaceChildren(outcomes.length ? hbars(outcomes, { label: 'Outcomes of the campaign' })
      : el('p', 'empty small', 'No outcomes yet.'));
    ui.pause.disabled = s.status !== 'running';
    ui.resume.disabled = s.status !== 'paused';
    const item = ui.list.querySelector(`[data-campaign-id="${s.campaign_id}"] .status`);
    if (item) setStatus(item, s.status);
  }

  async function act(action) {
    const id = state.campaignId;
    if (id == null) return;
    ui.pause.disabled = ui.resume.disabled = true;
    setText(ui.cdMessage, action === 'pause' ? 'Pausing…' : 'Resuming…');
    try {
      await request(`v1/campaigns/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
      setText(ui.cdMessage, action === 'pause' ? 'Paused: no new calls; calls in flight go on.'
        : 'Resumed: its pending contacts are dialed again.');
    } catch (e) {
      setText(ui.cdMessage, e.kind === 'forbidden'
        ? 'This token may not pause or resume campaigns (it needs the dial scope).'
        : 'That did not work: ' + e.message);
      failed(e);
    }
    loadCampaign();
  }

  ui.list.addEventListener('click', (e) => {
    const b = e.target.closest('.campaign-item');
    if (b) openCampaign(Number(b.dataset.campaignId));
  });
  ui.pause.addEventListener('click', () => act('pause'));
  ui.resume.addEventListener('click', () => act('start'));

  return {
    /** Signed in: the today strip loads and refreshes. */
    start() {
      state.live = true;
      state.epoch++;
      loadToday();
      clearInterval(state.timer);
      state.timer = setInterval(loadToday, TODAY_EVERY_MS);
    },
    /** Signed out: stop, and forget every figure, so the next token's organization never sees
     *  this one's, even for a moment. */
    stop() {
      for (const node of document.querySelectorAll('#today [data-figure], #campaign-detail [data-figure]')) {
        node.textContent = '—';
      }
      setText(ui.todayStatus, '');
      setText(ui.cdMessage, '');
      ui.cdProgress.replaceChildren();
      ui.cdOutcomes.replaceChildren();
      state.live = false;
      state.epoch++;
      clearInterval(state.timer);
      clearInterval(state.campaignTimer);
      clearTimeout(state.soon);
      state.campaignId = null;
      ui.list.replaceChildren();
      ui.detail.hidden = true;
      ui.outcomes.replaceChildren();
      ui.latency.replaceChildren();
      ui.hours.replaceChildren();
    },
    callEnded,
    /** A campaign changed state (a feed event): the campaign view shows it at once. */
    campaignChanged(id) {
      if (state.live && state.campaignId != null && Number(id) === state.campaignId) loadCampaign();
    },
    /** The campaign view is shown (or hidden): its figures refresh while it is. */
    showCampaigns(shown) {
      clearInterval(state.campaignTimer);
      if (!shown || !state.live) return;
      loadCampaigns();
      loadCampaign();
      state.campaignTimer = setInterval(loadCampaign, CAMPAIGN_EVERY_MS);
    },
  };
}
