/*
 * The AudioWorklet that carries the supervisor's microphone into a call (loaded by console.js
 * when the supervisor barges in): it takes the microphone's first channel at the context's
 * rate, resamples it to the call's rate (processorOptions.rate, 16 kHz; each output sample the
 * mean of the input samples it covers, linear interpolation when upsampling), and posts one
 * Int16Array of 20 ms (320 samples at 16 kHz) at a time to the main thread, which sends it on
 * the barge WebSocket. It also reports whether the frame was loud, for the page's status.
 */
class MicProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.rate = (options.processorOptions && options.processorOptions.rate) || 16000;
    this.step = sampleRate / this.rate; // input samples per output sample
    this.frame = new Int16Array(Math.round(this.rate / 50));
    this.filled = 0;
    this.pos = 0; // where the next output sample starts, in input samples
    this.carry = []; // input samples not yet used
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    for (let i = 0; i < input.length; i++) this.carry.push(input[i]);
    while (this.pos + this.step <= this.carry.length) {
      const start = this.pos;
      const end = this.pos + this.step;
      let sum = 0;
      let n = 0;
      for (let k = Math.floor(start); k < Math.ceil(end) && k < this.carry.length; k++) { sum += this.carry[k]; n++; }
      const value = n ? sum / n : 0;
      this.frame[this.filled++] = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
      this.pos = end;
      if (this.filled === this.frame.length) {
        let loud = false;
        for (let j = 0; j < this.frame.length; j++) if (Math.abs(this.frame[j]) > 1000) { loud = true; break; }
        const out = this.frame;
        this.frame = new Int16Array(out.length);
        this.filled = 0;
        this.port.postMessage({ pcm: out, loud }, [out.buffer]);
      }
    }
    const used = Math.floor(this.pos);
    if (used > 0) {
      this.carry.splice(0, used);
      this.pos -= used;
    }
    return true;
  }
}

registerProcessor('asterai-mic', MicProcessor);
