/*
 * The AudioWorklet that plays a live call (loaded by console.js with audioWorklet.addModule):
 * the main thread posts Float32Array frames at the call's rate; this processor resamples them
 * to the context's rate (linear interpolation) and plays them from a small queue. A queue that
 * grows past half a second (the tab was busy) is cut back, so the supervisor stays live rather
 * than falling further behind. It reports how many frames it played, for the page's status.
 */
class ListenProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.rate = (options.processorOptions && options.processorOptions.rate) || 16000;
    this.step = this.rate / sampleRate;
    this.queue = [];
    this.current = null;
    this.offset = 0;
    this.played = 0;
    this.port.onmessage = (event) => {
      const frame = event.data;
      if (!(frame instanceof Float32Array)) return;
      this.queue.push(frame);
      let queued = 0;
      for (const f of this.queue) queued += f.length;
      while (queued > this.rate / 2 && this.queue.length > 1) queued -= this.queue.shift().length;
    };
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!out) return true;
    let loud = false;
    for (let i = 0; i < out.length; i++) {
      while (this.current && this.offset >= this.current.length - 1) {
        this.offset -= this.current.length;
        this.current = this.queue.shift() || null;
        if (this.current) this.played++;
      }
      if (!this.current) {
        this.current = this.queue.shift() || null;
        this.offset = 0;
        if (!this.current) { out[i] = 0; continue; }
        this.played++;
      }
      const at = Math.max(0, this.offset);
      const k = Math.floor(at);
      const frac = at - k;
      const a = this.current[k] || 0;
      const b = k + 1 < this.current.length ? this.current[k + 1] : a;
      out[i] = a + (b - a) * frac;
      if (Math.abs(out[i]) > 0.01) loud = true;
      this.offset += this.step;
    }
    for (let ch = 1; ch < outputs[0].length; ch++) outputs[0][ch].set(out);
    if (loud || this.played % 50 === 0) this.port.postMessage({ played: this.played, loud });
    return true;
  }
}

registerProcessor('asterai-listen', ListenProcessor);
