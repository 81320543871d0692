/*
 * The supervisors' console on the open call (scope `supervise`): listen to it, coach the AI,
 * pause and resume it, barge in with the microphone, take it over and give it back. Listening
 * opens GET v1/calls/{id}/listen (a WebSocket; the token goes as ?token=, as for the feed),
 * reads `listen.start` for the rate, and hands each binary frame of 16-bit PCM to the
 * AudioWorklet of listen-worklet.js, which plays it. Barging opens GET v1/calls/{id}/barge,
 * reads `barge.start` for the rate, and sends the microphone (getUserMedia) as 16-bit PCM
 * frames made by the AudioWorklet of barge-worklet.js. The console shows only to a token with
 * the `supervise` scope (GET v1/token says). Nothing goes on `window`; every text from the
 * daemon reaches the DOM through textContent.
 */

const WORKLET = 'ui/listen-worklet.js';
const MIC_WORKLET = 'ui/barge-worklet.js';

export function createConsole({ ui, request, token }) {
  let callId = null;
  let listening = null; // { ws, context, node }
  let barging = null; // { ws, context, stream, node, frames }
  let live = false;
  let scopes = null; // { token, supervise } once GET v1/token answered for this token

  function say(text) { ui.status.textContent = text; }

  function canSupervise() { return Boolean(scopes && scopes.token === token() && scopes.supervise); }

  function render() {
    ui.panel.hidden = !callId || !canSupervise();
    ui.listen.disabled = !live;
    ui.listen.textContent = listening ? 'Stop listening' : 'Listen';
    ui.listen.setAttribute('aria-pressed', listening ? 'true' : 'false');
    ui.barge.disabled = !live;
    ui.barge.textContent = barging ? 'Stop barging' : 'Barge';
    ui.barge.setAttribute('aria-pressed', barging ? 'true' : 'false');
    ui.pause.disabled = ui.resume.disabled = ui.coachSend.disabled = ui.coachText.disabled = !live;
    ui.takeover.disabled = ui.giveback.disabled = !live;
  }

  /** Asks the daemon once per token whether it may supervise; the console stays hidden until
   *  it says so. */
  async function learnScopes() {
    const asked = token();
    if (!asked || (scopes && scopes.token === asked)) return;
    scopes = { token: asked, supervise: false };
    try {
      const info = await request('v1/token');
      if (token() !== asked) return;
      scopes = { token: asked, supervise: Array.isArray(info.scopes) && info.scopes.includes('supervise') };
      ui.panel.dataset.supervise = scopes.supervise ? 'yes' : 'no';
    } catch (e) {
      if (token() === asked) scopes = null; // asked again when the next call opens
    }
    render();
  }

  function stopBarging(why) {
    if (!barging) return;
    const { ws, context, stream } = barging;
    barging = null;
    try { ws.close(1000); } catch (e) { /* closed already */ }
    for (const track of stream.getTracks()) track.stop();
    context.close().catch(() => {});
    if (why) say(why);
    render();
  }

  async function startBarging() {
    const id = callId;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (e) {
      say('The microphone cannot be used: ' + (e && e.name ? e.name : 'refused') + '.');
      return;
    }
    if (id !== callId) { for (const t of stream.getTracks()) t.stop(); return; }
    const context = new AudioContext();
    try {
      await context.audioWorklet.addModule(MIC_WORKLET);
    } catch (e) {
      for (const t of stream.getTracks()) t.stop();
      context.close().catch(() => {});
      say('This browser cannot send the microphone (no AudioWorklet).');
      return;
    }
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const url = scheme + location.host + '/v1/calls/' + encodeURIComponent(id) + '/barge?token=' + encodeURIComponent(token());
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    barging = { ws, context, stream, node: null, frames: 0 };
    render();
    say('Connecting the microphone…');
    ws.onmessage = (event) => {
      const state = barging;
      if (!state || state.ws !== ws || typeof event.data !== 'string' || state.node) return;
      let start = null;
      try { start = JSON.parse(event.data); } catch (e) { return; }
      if (!start || start.type !== 'barge.start') return;
      const source = context.createMediaStreamSource(stream);
      state.node = new AudioWorkletNode(context, 'asterai-mic', { processorOptions: { rate: start.rate } });
      state.node.port.onmessage = (m) => {
        if (!barging || barging.ws !== ws || ws.readyState !== WebSocket.OPEN || !m.data || !m.data.pcm) return;
        ws.send(m.data.pcm.buffer);
        barging.frames++;
        ui.barge.dataset.frames = String(barging.frames);
        if (m.data.loud) ui.barge.dataset.loud = String(Number(ui.barge.dataset.loud || 0) + 1);
      };
      source.connect(state.node);
      context.resume().catch(() => {});
      say('Barging in: the caller and the AI hear you.');
    };
    ws.onclose = (event) => {
      if (!barging || barging.ws !== ws) return;
      stopBarging(event.reason ? 'Barge ended: ' + event.reason + '.' : 'Barge ended.');
    };
    ws.onerror = () => {
      if (!barging || barging.ws !== ws) return;
      stopBarging('Barging failed: the call cannot take the microphone (another supervisor barges in, or no ARI).');
    };
  }

  function stopListening(why) {
    if (!listening) return;
    const { ws, context } = listening;
    listening = null;
    try { ws.close(1000); } catch (e) { /* closed already */ }
    context.close().catch(() => {});
    if (why) say(why);
    render();
  }

  async function startListening() {
    const id = callId;
    const context = new AudioContext();
    try {
      await context.audioWorklet.addModule(WORKLET);
    } catch (e) {
      context.close().catch(() => {});
      say('This browser cannot play the call (no AudioWorklet).');
      return;
    }
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const url = scheme + location.host + '/v1/calls/' + encodeURIComponent(id) + '/listen?token=' + encodeURIComponent(token());
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    listening = { ws, context, node: null, frames: 0 };
    render();
    say('Connecting…');
    ws.onmessage = (event) => {
      const state = listening;
      if (!state || state.ws !== ws) return;
      if (typeof event.data === 'string') {
        let start = null;
        try { start = JSON.parse(event.data); } catch (e) { return; }
        if (start && start.type === 'listen.start' && !state.node) {
          state.node = new AudioWorkletNode(context, 'asterai-listen', { processorOptions: { rate: start.rate } });
          state.node.connect(context.destination);
          state.node.port.onmessage = (m) => {
            if (m.data && m.data.loud) ui.listen.dataset.heard = String(m.data.played);
          };
          context.resume().catch(() => {});
          say('Listening.');
        }
        return;
      }
      if (!state.node) return;
      const pcm = new Int16Array(event.data);
      const frame = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) frame[i] = pcm[i] / 32768;
      state.node.port.postMessage(frame, [frame.buffer]);
      state.frames++;
      ui.listen.dataset.frames = String(state.frames);
    };
    ws.onclose = (event) => {
      if (!listening || listening.ws !== ws) return;
      stopListening(event.reason ? 'Stopped: ' + event.reason + '.' : 'Listening stopped.');
    };
    ws.onerror = () => {
      if (!listening || listening.ws !== ws) return;
      stopListening('Listening failed: the call cannot be heard (a token without the supervise scope, or no ARI).');
    };
  }

  async function act(path, body, done) {
    const id = callId;
    try {
      const state = await request('v1/calls/' + encodeURIComponent(id) + '/' + path, { method: 'POST', body });
      if (id !== callId) return;
      say(done(state));
    } catch (e) {
      if (id !== callId) return;
      say(e.kind === 'forbidden' ? 'This token lacks the supervise scope.' : 'Refused: ' + e.message);
    }
  }

  ui.listen.addEventListener('click', () => {
    if (listening) stopListening('Listening stopped.');
    else startListening();
  });
  ui.barge.addEventListener('click', () => {
    if (barging) stopBarging('Barge ended.');
    else startBarging();
  });
  ui.takeover.addEventListener('click', () => act('takeover', null, () =>
    'Taken over: the AI is silent. ' + (barging ? 'The caller hears you.' : 'Barge to talk with the caller.')));
  ui.giveback.addEventListener('click', () => act('giveback', null, () => 'Given back: the AI answers again.'));
  ui.pause.addEventListener('click', () => act('pause', null, () => 'AI paused: the caller hears music on hold.'));
  ui.resume.addEventListener('click', () => act('resume', null, () => 'AI resumed.'));
  ui.coachForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = ui.coachText.value.trim();
    if (!text) return;
    act('coach', { text }, (state) => {
      ui.coachText.value = '';
      return 'Instruction sent (' + state.pending_coaching + ' waiting for the next answer).';
    });
  });

  return {
    /** The open call changed (or its status did): `active` says whether it is live. */
    show(id, active) {
      if (id !== callId) {
        stopListening(null);
        stopBarging(null);
        callId = id;
        say('');
      }
      live = Boolean(id) && active;
      if (!live) {
        stopListening(callId ? 'The call has ended.' : null);
        stopBarging(null);
      }
      render();
      if (id) learnScopes();
    },
  };
}
