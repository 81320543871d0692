/*
 * The supervisors' console on the open call (scope `supervise`): listen to it, coach the AI,
 * pause and resume it. Listening opens GET v1/calls/{id}/listen (a WebSocket; the token goes as
 * ?token=, as for the feed), reads `listen.start` for the rate, and hands each binary frame of
 * 16-bit PCM to the AudioWorklet of listen-worklet.js, which plays it. Nothing goes on `window`;
 * every text from the daemon reaches the DOM through textContent.
 */

const WORKLET = 'ui/listen-worklet.js';

export function createConsole({ ui, request, token }) {
  let callId = null;
  let listening = null; // { ws, context, node }
  let live = false;

  function say(text) { ui.status.textContent = text; }

  function render() {
    ui.panel.hidden = !callId;
    ui.listen.disabled = !live;
    ui.listen.textContent = listening ? 'Stop listening' : 'Listen';
    ui.listen.setAttribute('aria-pressed', listening ? 'true' : 'false');
    ui.pause.disabled = ui.resume.disabled = ui.coachSend.disabled = ui.coachText.disabled = !live;
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
        callId = id;
        say('');
      }
      live = Boolean(id) && active;
      if (!live) stopListening(callId ? 'The call has ended.' : null);
      render();
    },
  };
}
