// gendertool monitor --web: the page. No library. Every string that came from the device is
// written with textContent (never innerHTML), so a device cannot put markup on this page.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { device: null, history: [], stats: null, latest: null, ended: null, link: "connecting" };
window.gtState = state; // read by the browser tests

function text(el, s) { el.textContent = s == null ? "" : String(s); }
function fmt(v, d = 2) { return v == null || !isFinite(v) ? "-" : Number(v).toFixed(d); }
function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }
function td(row, s) { const c = document.createElement("td"); text(c, s); row.appendChild(c); return c; }
function kv(table, rows) {
  const body = table.tBodies[0];
  clear(body);
  for (const [k, v] of rows) { const tr = document.createElement("tr"); td(tr, k); td(tr, v); body.appendChild(tr); }
}
function bytes(n) {
  if (n == null) return "-";
  if (n >= 1048576) return (n / 1048576).toFixed(2) + " MiB";
  if (n >= 1024) return (n / 1024).toFixed(1) + " KiB";
  return n + " B";
}

// ------------------------------------------------------------------ link state

function setLink(s, detail) {
  state.link = s;
  const el = $("link");
  el.className = "badge " + s;
  el.dataset.state = s;
  text(el, { connecting: "connecting", connected: "connected", lost: "lost", back: "back", ended: "ended",
             offline: "page offline" }[s] || s);
  text($("link-text"), detail || "");
}

// ------------------------------------------------------------------ device card

function showDevice(d) {
  state.device = d;
  if (!d) return;
  // a virtual device has no arena, heaps or clock of a board: say so instead of "0 B"
  const na = (v, f) => (v ? f(v) : d.simulated ? "n/a (virtual device)" : "-");
  $("simulated").hidden = !d.simulated;
  $("source").value = d.source;
  kv($("device"), [
    ["board", d.board + (d.chip ? " (" + d.chip + ")" : "")],
    ["firmware", d.fw + "  (protocol v" + d.proto + ")"],
    ["model", d.model],
    ["model sha256", d.model_sha256],
    ["labels", (d.labels || []).join(", ")],
    ["input", "[" + (d.input || []).join(",") + "] int8"],
    ["arena", na(d.arena_bytes, () => bytes(d.arena_used) + " used of " + bytes(d.arena_bytes)) +
              (d.arena_in && d.arena_in !== "host" ? ", in " + d.arena_in : "")],
    ...(d.arena_warning ? [["WARNING", d.arena_warning]] : []),
    ["heap free", na(d.heap_internal || d.heap_psram, () => "internal " + bytes(d.heap_internal) + ", PSRAM " + bytes(d.heap_psram))],
    ["CPU", na(d.cpu_mhz, (v) => v + " MHz")],
    ["ESP-IDF / TFLM / ESP-NN", [d.idf || "-", d.tflm || "-", d.esp_nn || "-"].join(" / ")],
    ["input source", d.source + (d.running ? "" : " (stopped)") + (d.camera ? ", camera running" : "")],
    ["lines dropped", d.tx_dropped ? d.tx_dropped + " (the device dropped whole lines: the host was not reading)" : "0"],
    ["built-in samples", String(d.samples)],
    ["simulated", d.simulated ? "yes: a virtual device on this computer" : "no"],
  ]);
}

// ------------------------------------------------------------------ the input picture

function showInput(r) {
  let inp = r.input || {};
  const canvas = $("input");
  const origin = $("input-origin");
  let of = r;
  if (inp.origin === "device-sent") state.lastDevice = { r, source: r.source };
  else if (!inp.origin && state.lastDevice && state.lastDevice.source === r.source) {
    // the device sends its input with every Nth result: keep the latest one it sent, saying so
    of = state.lastDevice.r;
    inp = of.input;
  }
  canvas.dataset.seq = of.seq;
  if (!inp.origin) {
    origin.className = "origin none";
    text(origin, "input not available");
    text($("input-what"), "");
    text($("input-why"), inp.why || "");
    text($("input-check"), "");
    canvas.dataset.origin = "";
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    showSource(null);
    return;
  }
  const pic = inp.picture;
  if (canvas.width !== pic.w || canvas.height !== pic.h) { canvas.width = pic.w; canvas.height = pic.h; }
  const raw = atob(pic.rgb);
  const img = canvas.getContext("2d").createImageData(pic.w, pic.h);
  for (let i = 0, j = 0; i < pic.w * pic.h; i++) {
    img.data[j++] = raw.charCodeAt(3 * i);
    img.data[j++] = raw.charCodeAt(3 * i + 1);
    img.data[j++] = raw.charCodeAt(3 * i + 2);
    img.data[j++] = 255;
  }
  canvas.getContext("2d").putImageData(img, 0, 0);
  showSource(inp.source);
  canvas.dataset.origin = inp.origin;
  canvas.dataset.what = inp.what;
  origin.className = "origin " + (inp.origin === "device-sent" ? "device" : "host");
  text(origin, inp.origin === "device-sent" ? "device-sent input tensor" + (of === r ? "" : " of result #" + of.seq)
                                            : "host-reconstructed input (the device did not send it)");
  text($("input-what"), inp.what + ": int8 [" + (inp.shape || []).join(",") + "]");
  text($("input-why"), inp.origin === "device-sent"
       ? (of === r ? "" : "the device sends its input with every Nth result; this is the latest it sent")
       : "rebuilt with the host's reference preprocessing of the same image");
  const check = $("input-check");
  text(check, "host reference scores [" + inp.reference_scores.join(", ") + "] vs device [" + (of.scores || []).join(", ") +
       "] on that tensor: " + (inp.bit_exact ? "bit-exact" : "DIFFERENT") +
       (inp.matches_host === undefined ? "" : inp.matches_host
         ? "; the device's tensor is byte for byte the host's preprocessing of the same image"
         : "; the device's tensor DIFFERS from the host's preprocessing of the same image"));
  check.dataset.matchesHost = inp.matches_host === undefined ? "" : String(inp.matches_host);
  check.className = "small " + (inp.bit_exact && inp.matches_host !== false ? "ok" : "error");
}

// the image before crop and resize, with the crop the model gets (built-in samples, uploads)
function showSource(src) {
  const wrap = $("source-wrap");
  if (!src) { wrap.hidden = true; return; }
  wrap.hidden = false;
  const img = $("source-img");
  const url = "/source/" + encodeURIComponent(src.key);
  if (img.getAttribute("src") !== url) img.setAttribute("src", url);
  // up to 256 px a side; small images are enlarged pixel for pixel like the input
  const scale = Math.min(256 / src.w, 256 / src.h);
  img.style.width = Math.round(src.w * scale) + "px";
  img.style.imageRendering = scale > 1 ? "pixelated" : "auto";
  const [y0, x0, h, w] = src.crop, box = $("crop-box").style;
  box.left = (100 * x0) / src.w + "%"; box.top = (100 * y0) / src.h + "%";
  box.width = (100 * w) / src.w + "%"; box.height = (100 * h) / src.h + "%";
  text($("source-caption"), "before crop and resize: " + src.w + "x" + src.h + "; the box (" + w + "x" + h +
       (src.crop_mode === "center" ? ", centre square" : ", whole frame") +
       (src.crop_fraction < 1 ? " x " + src.crop_fraction : "") + ") is what the model gets");
}

// ------------------------------------------------------------------ result

function bars(el, items, topIndex) {
  clear(el);
  items.forEach(([name, frac, label], i) => {
    const row = document.createElement("div");
    row.className = "bar" + (i === topIndex ? " top" : "");
    const n = document.createElement("span"); n.className = "name"; text(n, name);
    const track = document.createElement("div"); track.className = "track";
    const fill = document.createElement("div"); fill.className = "fill";
    fill.style.width = Math.max(0, Math.min(1, frac)) * 100 + "%";
    track.appendChild(fill);
    const v = document.createElement("span"); v.className = "val"; text(v, label);
    row.append(n, track, v);
    el.appendChild(row);
  });
}

function showResult(r) {
  state.latest = r;
  // the source of continuous results is the device's current one (a --source switch sends no hello)
  if (state.device && r.source !== "upload" && state.device.source !== r.source) showDevice({ ...state.device, source: r.source });
  text($("seq"), "#" + r.seq);
  text($("label"), r.label);
  text($("confidence"), r.confidence == null ? "" : (r.confidence * 100).toFixed(1) + " % confident");
  const v = $("verdict");
  if (r.sample_name && r.truth != null) {
    v.className = "verdict " + (r.correct ? "right" : "wrong");
    text(v, (r.correct ? "right" : "WRONG") + ": sample " + r.sample_name + " is " + r.truth);
  } else if (r.sample_name) {
    v.className = "verdict"; text(v, "sample " + r.sample_name + " (true label unknown)");
  } else { v.className = "verdict"; text(v, ""); }
  const labels = r.labels && r.labels.length ? r.labels : (r.probs || []).map((_, i) => "class " + i);
  bars($("bars"), labels.map((l, i) => [l, r.probs[i], ((r.probs[i] || 0) * 100).toFixed(1) + " %"]), r.class);
  text($("source-line"), "source " + r.source + (r.source === "sample" ? " " + r.sample : "") +
       "   invoke " + fmt(r.invoke_us / 1000) + " ms   pre " + fmt(r.pre_us / 1000) + " ms" +
       (r.simulated ? "   (simulated)" : ""));
  showInput(r);
}

// ------------------------------------------------------------------ statistics

function showStats(s) {
  if (!s) return;
  state.stats = s;
  const d = s.damaged || {};
  const damaged = (d.bad_crc || 0) + (d.bad_frame || 0) + (d.bad_record || 0) + (d.overlong || 0) + (d.partial || 0);
  kv($("stats"), [
    ["invoke ms", "p50 " + fmt(s.invoke_ms.p50) + "  p90 " + fmt(s.invoke_ms.p90) + "  p99 " + fmt(s.invoke_ms.p99)],
    ["pre ms", "p50 " + fmt(s.pre_ms.p50) + "  p90 " + fmt(s.pre_ms.p90) + "  p99 " + fmt(s.pre_ms.p99)],
    ["", "percentiles over the last " + s.window + " results"],
    ["FPS", fmt(s.fps, 1)],
    ["results", String(s.results)],
    ["lost / damaged", s.lost + " missing seq, " + damaged + " damaged" +
       (damaged ? " (crc " + (d.bad_crc || 0) + ", frame " + (d.bad_frame || 0) + ", record " + (d.bad_record || 0) +
                  ", overlong " + (d.overlong || 0) + ", cut " + (d.partial || 0) + ")" : "")],
    ["port lost / back", s.disconnects + " / " + s.reconnects],
    ["panics", String(s.panics)],
  ]);
  const cls = Object.entries(s.classes || {}).sort((a, b) => b[1] - a[1]);
  const total = cls.reduce((a, [, n]) => a + n, 0) || 1;
  bars($("classes"), cls.map(([k, n]) => [k, n / total, n + " (" + Math.round(100 * n / total) + " %)"]), -1);
  const checked = s.samples_right + s.samples_wrong;
  text($("samples-right"), checked ? "built-in samples: " + s.samples_right + "/" + checked + " right" : "");
}

function drawChart() {
  const c = $("chart");
  const w = c.clientWidth || c.width, h = c.height;
  if (c.width !== w) c.width = w;
  const g = c.getContext("2d");
  g.clearRect(0, 0, w, h);
  const pts = state.history;
  if (pts.length < 2) { g.fillStyle = "#6b7385"; g.fillText("waiting for results", 10, 20); return; }
  const inv = pts.map((p) => p.invoke_us / 1000), pre = pts.map((p) => p.pre_us / 1000);
  const sorted = inv.concat(pre).sort((a, b) => a - b);
  const top = Math.max(0.001, sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.995))] * 1.15);
  const left = 44, right = 8, bottom = 18, plotW = w - left - right, plotH = h - bottom - 6;
  g.strokeStyle = "#e3e6ec"; g.fillStyle = "#6b7385"; g.font = "11px sans-serif"; g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const y = 6 + plotH - (plotH * k) / 4;
    g.beginPath(); g.moveTo(left, y); g.lineTo(w - right, y); g.stroke();
    g.fillText((top * k / 4).toFixed(top < 4 ? 2 : 1), 4, y + 4);
  }
  g.fillText("#" + pts[0].seq, left, h - 4);
  const lastLabel = "#" + pts[pts.length - 1].seq;
  g.fillText(lastLabel, w - right - g.measureText(lastLabel).width, h - 4);
  const line = (vals, color) => {
    g.strokeStyle = color; g.lineWidth = 1.5; g.beginPath();
    vals.forEach((v, i) => {
      const x = left + (plotW * i) / (vals.length - 1), y = 6 + plotH - (plotH * Math.min(v, top)) / top;
      if (i) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke();
  };
  line(pre, "#e0832b");
  line(inv, "#2f6fde");
}

function drawHist() {
  const c = $("hist"), g = c.getContext("2d"), w = c.width, h = c.height;
  g.clearRect(0, 0, w, h);
  const vals = state.history.map((p) => p.invoke_us / 1000);
  text($("hist-n"), vals.length);
  if (vals.length < 2) return;
  // the range is the 1st to 99th percentile: a few slow outliers share the last bin ("and more")
  const sorted = vals.slice().sort((a, b) => a - b);
  const lo = sorted[Math.floor(sorted.length * 0.01)], hi = sorted[Math.ceil(sorted.length * 0.99) - 1];
  const nb = 24, span = Math.max(hi - lo, 1e-6);
  const counts = new Array(nb).fill(0);
  vals.forEach((v) => counts[Math.max(0, Math.min(nb - 1, Math.floor(((v - lo) / span) * nb)))]++);
  const most = Math.max(...counts), bw = (w - 8) / nb, plotH = h - 16;
  g.fillStyle = "#2f6fde";
  counts.forEach((n, i) => { const bh = (plotH * n) / most; g.fillRect(4 + i * bw, plotH - bh, bw - 1, bh); });
  g.fillStyle = "#6b7385"; g.font = "11px sans-serif";
  g.fillText(lo.toFixed(2) + " ms", 4, h - 3);
  const t = (sorted[sorted.length - 1] > hi ? ">= " : "") + hi.toFixed(2) + " ms"; g.fillText(t, w - 4 - g.measureText(t).width, h - 3);
}

let drawPending = false;
function redraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; drawChart(); drawHist(); });
}

function addLog(line) {
  const el = $("log");
  const atEnd = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
  el.appendChild(document.createTextNode(line + "\n"));
  while (el.childNodes.length > 200) el.removeChild(el.firstChild);
  if (atEnd) el.scrollTop = el.scrollHeight;
}

// ------------------------------------------------------------------ messages

function onMessage(m) {
  switch (m.type) {
    case "snapshot":
      if (m.port) text($("port"), m.port);
      showDevice(m.device);
      state.history = m.history || [];
      if (m.latest) showResult(m.latest);
      showStats(m.stats);
      clear($("log")); (m.logs || []).forEach(addLog);
      showInputSetting(m.input_every);
      if (m.ended) { state.ended = m.ended; setLink("ended", m.ended); }
      else setLink(m.link, m.link_text);
      redraw();
      break;
    case "hello":
      showDevice(m.device);
      if (state.link === "connecting") setLink("connected");
      break;
    case "result":
      state.history.push({ seq: m.result.seq, invoke_us: m.result.invoke_us, pre_us: m.result.pre_us });
      if (state.history.length > 300) state.history.shift();
      showResult(m.result);
      showStats(m.stats);
      if (state.link === "connecting") setLink("connected");
      redraw();
      break;
    case "stats": showStats(m.stats); break;
    case "link": setLink(m.state, m.text); showStats(m.stats); break;
    case "log": addLog(m.text); break;
    case "status": addLog("[monitor] " + m.text); break;
    case "panic": addLog("[panic] " + m.text); break;
    case "device_error": addLog("[device error] " + m.code + " (" + (m.cmd || "spontaneous") + "): " + m.text); break;
    case "ended": state.ended = m.text; setLink("ended", m.text); break;
    case "input_setting": showInputSetting(m.every); break;
  }
}

let retry = null;
function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  ws.onclose = () => {
    if (!state.ended) setLink("offline", "the page lost the monitor (stopped?); retrying");
    clearTimeout(retry);
    retry = setTimeout(connect, 2000);
  };
}

// ------------------------------------------------------------------ controls

async function post(url, body, headers) {
  const res = await fetch(url, { method: "POST", body, headers: headers || { "Content-Type": "application/json" } });
  let data = {};
  try { data = await res.json(); } catch (e) { data = { error: res.status + " " + res.statusText }; }
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}
function controlError(e) { text($("control-error"), e ? String(e.message || e) : ""); }

$("source").addEventListener("change", (ev) =>
  post("/api/command", JSON.stringify({ cmd: "source", source: ev.target.value })).then(() => controlError(), controlError));
function showInputSetting(every) {
  const sel = $("input-every");
  const v = String(every || 0);
  if (![...sel.options].some((o) => o.value === v)) {
    const n = Number(v), suffix = n % 100 >= 11 && n % 100 <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th");
    const o = document.createElement("option"); o.value = v; text(o, "every " + v + suffix); sel.appendChild(o);
  }
  sel.value = v;
  sel.dataset.every = v;
}
$("input-every").addEventListener("change", (ev) => {
  const v = ev.target.value;
  post("/api/command", JSON.stringify({ cmd: "input", every: v === "once" ? "once" : Number(v) }))
    .then(() => { controlError(); if (v === "once") ev.target.value = ev.target.dataset.every || "0"; }, controlError);
});
$("start").addEventListener("click", () => post("/api/command", JSON.stringify({ cmd: "start" })).then(() => controlError(), controlError));
$("stop").addEventListener("click", () => post("/api/command", JSON.stringify({ cmd: "stop" })).then(() => controlError(), controlError));
$("bench").addEventListener("click", async () => {
  const out = $("bench-out");
  text(out, "benchmark running (results pause meanwhile)...");
  try {
    const b = await post("/api/bench", JSON.stringify({ n: Number($("bench-n").value), warmup: Number($("bench-warmup").value) }));
    text(out, b.got + "/" + b.n + " runs (" + b.warmup + " warm-up): invoke p50 " + fmt(b.invoke_ms && b.invoke_ms.p50) +
         " p90 " + fmt(b.invoke_ms && b.invoke_ms.p90) + " p99 " + fmt(b.invoke_ms && b.invoke_ms.p99) + " ms, pre p50 " +
         fmt(b.pre_ms && b.pre_ms.p50) + " ms" + (b.simulated ? " (simulated)" : "") + (b.error ? "; " + b.error : ""));
    controlError();
  } catch (e) { text(out, ""); controlError(e); }
});

async function upload(file) {
  const out = $("upload-out");
  out.dataset.state = "sending";
  text(out, "uploading " + file.name + " (" + bytes(file.size) + ")...");
  try {
    const r = await post("/api/upload", file, { "Content-Type": "application/octet-stream", "X-Filename": encodeURIComponent(file.name) });
    out.dataset.state = "done";
    out.dataset.label = r.label;
    out.dataset.bitExact = r.bit_exact;
    text(out, file.name + " (" + r.size.join("x") + "): device says " + r.label + " (" +
         (r.probs[r.class] * 100).toFixed(1) + " %), scores [" + r.scores.join(", ") + "]; host reference [" +
         r.reference_scores.join(", ") + "]: " + (r.bit_exact ? "bit-exact" : "DIFFERENT") + "  (#" + r.seq + ")");
    controlError();
  } catch (e) { out.dataset.state = "failed"; text(out, ""); controlError(e); }
}
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (ev) => { ev.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  const f = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
  if (f) upload(f);
});
$("file").addEventListener("change", (ev) => { if (ev.target.files[0]) upload(ev.target.files[0]); });
// a file dropped beside the drop zone must not make the browser leave the page
["dragover", "drop"].forEach((t) => window.addEventListener(t, (ev) => ev.preventDefault()));
window.addEventListener("resize", redraw);

connect();
