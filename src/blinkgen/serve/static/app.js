// blinkgen web page: submit jobs, stream their progress (Server-Sent Events), show the images.
// Events are read with fetch() rather than EventSource because EventSource cannot send the
// Authorization header that a server with API keys requires.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];

function apiKey() { return localStorage.getItem("blinkgen-key") || ""; }

function headers(extra = {}) {
  const h = { ...extra };
  if (apiKey()) h["Authorization"] = "Bearer " + apiKey();
  return h;
}

// Seeds go up to 2^63 - 1, but a JS number holds integers exactly only below 2^53: seeds are
// sent as their digits and, where the browser can (JSON.parse source text access), read back as
// strings, so a seed copied from a PNG reproduces that image here too.
function parseJSON(text) {
  return JSON.parse(text, (key, value, ctx) =>
    key === "seed" && typeof value === "number" && ctx && ctx.source ? ctx.source : value);
}

function bodyJSON(obj, seedDigits) {
  const text = JSON.stringify(obj);
  return seedDigits ? text.replace(/}$/, `,"seed":${seedDigits}}`) : text;
}

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: headers(opts.headers) });
  let body = null;
  try { body = parseJSON(await r.text()); } catch (e) { /* not JSON */ }
  if (r.status === 401) $("keybox").hidden = false;
  if (!r.ok) throw new Error((body && body.error && body.error.message) || `HTTP ${r.status}`);
  return body;
}

async function checkReady() {
  const s = $("status");
  try {
    const r = await fetch("/ready");
    s.textContent = r.ok ? "ready" : "not ready";
    s.className = "status " + (r.ok ? "ok" : "bad");
  } catch (e) { s.textContent = "offline"; s.className = "status bad"; }
}

async function loadModels() {
  try {
    models = (await api("/v1/models")).data;
  } catch (e) { $("formerror").textContent = e.message; return; }
  const sel = $("model");
  sel.innerHTML = "";
  for (const m of models) sel.add(new Option(`${m.id} (${m.family}, ${m.sizes[0]})`, m.id));
  applyModel();
}

function applyModel() {
  const m = models.find((x) => x.id === $("model").value);
  if (!m) return;
  const sel = $("sampler");
  sel.innerHTML = "";
  for (const s of m.samplers) sel.add(new Option(s, s));
  sel.value = m.defaults.sampler;
  const neg = (m.supports || []).includes("negative_prompt");
  $("negative").disabled = !neg;
  $("negative").title = neg ? "" : `the ${m.family} family has no classifier-free guidance: no negative prompt`;
  $("steps").placeholder = m.defaults.steps;
  $("steps").max = m.max_steps;
  $("guidance").placeholder = m.defaults.guidance;
}

// blank = none (the server treats a blank negative prompt as none too); a disabled field is not sent
function negativePrompt() {
  const v = $("negative").value;
  return $("negative").disabled || v.trim() === "" ? undefined : v;
}

function num(id) { const v = $(id).value.trim(); return v === "" ? undefined : Number(v); }

async function submit(ev) {
  ev.preventDefault();
  $("formerror").textContent = "";
  const body = {
    prompt: $("prompt").value, model: $("model").value || undefined, n: num("n") || 1,
    steps: num("steps"), guidance: num("guidance"),
    sampler: $("sampler").value || undefined, response_format: "url",
    negative_prompt: negativePrompt(),
  };
  const seed = $("seed").value.trim();
  if (seed !== "" && !/^\d+$/.test(seed)) {
    $("formerror").textContent = "seed must be a whole number from 0 to 9223372036854775807";
    return;
  }
  $("generate").disabled = true;
  try {
    const job = editImage ? await api("/v1/jobs/edits", { method: "POST", body: await editForm(body, seed) })
      : await api("/v1/jobs", {
        method: "POST", body: bodyJSON(body, seed), headers: { "Content-Type": "application/json" },
      });
    const card = addCard(job);
    follow(job.id, card);
  } catch (e) {
    $("formerror").textContent = e.message;
  } finally {
    $("generate").disabled = false;
  }
}

function addCard(job) {
  const card = $("jobtpl").content.firstElementChild.cloneNode(true);
  card.dataset.id = job.id;
  card.querySelector(".prompt").textContent = job.prompt;
  const s = job.settings;
  card.querySelector(".meta").textContent =
    `${job.model} · ${job.progress.images_total} image(s) · ${s.steps} steps · ${s.sampler} · guidance ${s.guidance}` +
    (s.negative_prompt ? ` · negative: ${s.negative_prompt}` : "");
  card.querySelector(".cancel").onclick = () =>
    api(`/v1/jobs/${job.id}`, { method: "DELETE" }).catch((e) => { $("formerror").textContent = e.message; });
  $("jobs").prepend(card);
  render(card, job);
  return card;
}

function render(card, job) {
  const p = job.progress;
  const pct = Math.round(100 * p.fraction);
  card.className = "job " + job.state;
  const st = card.querySelector(".state");
  st.textContent = job.state;
  st.className = "state " + job.state;
  card.querySelector(".progress-bar").style.width = pct + "%";
  card.querySelector(".progress").setAttribute("aria-valuenow", String(pct));
  let text = `${p.images_done}/${p.images_total} images`;
  if (job.state === "queued") text = `queued · ${job.queue_position ?? 0} ahead`;
  else if (job.state === "running") text += ` · step ${p.step} of ${p.steps}`;
  else if (job.error) text = job.error.message;
  card.querySelector(".progress-text").textContent = text;
  const pv = card.querySelector(".preview");
  if (job.preview && job.state === "running") { pv.src = job.preview; pv.hidden = false; } else pv.hidden = true;
  const finished = ["done", "failed", "cancelled"].includes(job.state);
  card.querySelector(".cancel").hidden = finished;
  const gallery = card.querySelector(".gallery");
  for (const d of job.data || []) {
    if (gallery.querySelector(`[data-seed="${d.seed}"]`)) continue;
    const fig = document.createElement("figure");
    fig.dataset.seed = d.seed;
    const img = document.createElement("img");
    img.src = d.url; img.alt = `${job.prompt} (seed ${d.seed})`;
    const cap = document.createElement("figcaption");
    const a = document.createElement("a");
    a.href = d.url; a.download = `blinkgen-${d.seed}.png`; a.textContent = "download";
    cap.append(`seed ${d.seed} · `, a);
    fig.append(img, cap);
    gallery.append(fig);
  }
}

// Parse a text/event-stream body: blocks separated by a blank line, "event:" and "data:" fields.
async function follow(id, card) {
  try {
    const r = await fetch(`/v1/jobs/${id}/events`, { headers: headers() });
    if (!r.ok || !r.body) throw new Error(`events: HTTP ${r.status}`);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (data) render(card, parseJSON(data));
      }
    }
  } catch (e) {
    // the stream broke (server restart, network): fall back to one poll so the card is not stuck
    try { render(card, await api(`/v1/jobs/${id}`)); } catch (e2) { card.querySelector(".progress-text").textContent = e.message; }
  }
}

// ---- images in: drop / paste / choose an image, paint a mask, send an edit job ----------------
// The picture is cropped to its centred square (the server takes square images) and kept at its
// own resolution up to EDIT_MAX_SIDE. The mask canvas is painted opaque where the user wants a
// repaint; it is sent in OpenAI's convention: transparent = repaint, opaque = keep.
const EDIT_MAX_SIDE = 512;
let editImage = null;  // the square canvas sent as `image`, or null: plain text-to-image
let painted = false;

function loadEditImage(file) {
  if (!file || !file.type.startsWith("image/")) { $("formerror").textContent = "that is not an image"; return; }
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    const side = Math.min(img.naturalWidth, img.naturalHeight);
    const out = Math.min(side, EDIT_MAX_SIDE);
    for (const c of [$("imgcanvas"), $("maskcanvas")]) { c.width = out; c.height = out; }
    const ctx = $("imgcanvas").getContext("2d");
    ctx.imageSmoothingEnabled = out !== side;
    ctx.drawImage(img, (img.naturalWidth - side) / 2, (img.naturalHeight - side) / 2, side, side, 0, 0, out, out);
    URL.revokeObjectURL(url);
    editImage = $("imgcanvas");
    clearMask();
    $("editor").hidden = false;
    $("drop").hidden = true;
    $("generate").textContent = "Edit";
  };
  img.onerror = () => { $("formerror").textContent = "the browser cannot read that image"; URL.revokeObjectURL(url); };
  img.src = url;
}

function clearMask() {
  const c = $("maskcanvas");
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
  painted = false;
  $("masknote").textContent = "no mask: the whole image is redrawn (img2img); paint to repaint only part";
}

function removeImage() {
  editImage = null;
  $("editor").hidden = true;
  $("drop").hidden = false;
  $("file").value = "";
  $("generate").textContent = "Generate";
}

function paintAt(ev) {
  const c = $("maskcanvas");
  const r = c.getBoundingClientRect();
  const x = (ev.clientX - r.left) * c.width / r.width, y = (ev.clientY - r.top) * c.height / r.height;
  const rad = Number($("brush").value) * c.width / 256;
  const ctx = c.getContext("2d");
  ctx.fillStyle = "rgb(230, 40, 80)";
  ctx.beginPath(); ctx.arc(x, y, rad, 0, 2 * Math.PI); ctx.fill();
  painted = true;
  $("masknote").textContent = "painted areas are repainted; the rest comes back unchanged";
}

function canvasBlob(canvas) { return new Promise((ok) => canvas.toBlob(ok, "image/png")); }

async function editForm(body, seed) {
  const f = new FormData();
  for (const [k, v] of Object.entries(body)) if (v !== undefined && v !== "") f.append(k, String(v));
  if (seed !== "") f.append("seed", seed);
  const strength = $("strength").value.trim();
  if (strength !== "") f.append("strength", strength);
  f.append("image", await canvasBlob(editImage), "image.png");
  if (painted) {  // OpenAI's mask: opaque everywhere, transparent where painted
    const paint = $("maskcanvas");
    const m = document.createElement("canvas");
    m.width = paint.width; m.height = paint.height;
    const ctx = m.getContext("2d");
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, m.width, m.height);
    ctx.globalCompositeOperation = "destination-out";
    ctx.drawImage(paint, 0, 0);
    f.append("mask", await canvasBlob(m), "mask.png");
  }
  return f;
}

// takeImage (replay.js) sends a blinkgen PNG to the form and any other image to loadEditImage
$("file").addEventListener("change", () => takeImage($("file").files[0]));
$("drop").addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => {
  e.preventDefault(); $("drop").classList.remove("over");
  takeImage(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
  if (item) { e.preventDefault(); takeImage(item.getAsFile()); }
});
$("maskcanvas").addEventListener("pointerdown", (e) => {
  $("maskcanvas").setPointerCapture(e.pointerId); paintAt(e);
});
$("maskcanvas").addEventListener("pointermove", (e) => { if (e.buttons & 1) paintAt(e); });
$("clearmask").addEventListener("click", clearMask);
$("removeimage").addEventListener("click", removeImage);

$("form").addEventListener("submit", submit);
$("model").addEventListener("change", applyModel);
$("apikey").value = apiKey();
$("apikey").addEventListener("change", () => { localStorage.setItem("blinkgen-key", $("apikey").value.trim()); loadModels(); });
checkReady();
setInterval(checkReady, 5000);
loadModels();

// ---- live generation as you type (issue 14) -----------------------------------------------
// Each keystroke (debounced) asks for a 1-step image of the prompt so far. A newer request
// aborts the older fetch, and the server cancels the older job itself (same `supersede` key):
// queued, it never runs; running, it stops at its next step. The image updates in place, with
// the time it took from sending the request to the decoded image. `window.blinkLive` holds the
// counters bench/bench_live.py reads.
const LIVE_DEBOUNCE_MS = 40;
const live = { key: "live-" + Math.random().toString(36).slice(2), timer: null, ctrl: null, seq: 0,
               sent: 0, shown: 0, superseded: 0, last: null };
window.blinkLive = live;

function liveSchedule() {
  if (!$("liveon").checked) return;
  clearTimeout(live.timer);
  live.timer = setTimeout(liveRequest, LIVE_DEBOUNCE_MS);
}

function liveSeed() {
  const s = $("seed").value.trim();
  return /^\d{1,15}$/.test(s) ? Number(s) : 0;  // a fixed seed: the image changes with the prompt only
}

async function liveRequest() {
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  if (live.ctrl) { live.ctrl.abort(); live.superseded += 1; }
  const ctrl = new AbortController();
  live.ctrl = ctrl;
  const seq = ++live.seq;
  live.sent += 1;
  const t0 = performance.now();
  const body = { prompt, model: $("model").value || undefined, n: 1, steps: 1, seed: liveSeed(),
                 negative_prompt: negativePrompt(), response_format: "b64_json", supersede: live.key };
  try {
    const r = await fetch("/v1/images/generations", {
      method: "POST", body: JSON.stringify(body), signal: ctrl.signal,
      headers: headers({ "Content-Type": "application/json" }),
    });
    const out = await r.json();
    if (!r.ok) throw new Error((out.error && out.error.message) || `HTTP ${r.status}`);
    if (seq !== live.seq) return;  // a newer prompt is on its way
    const img = $("liveimg");
    img.src = "data:image/png;base64," + out.data[0].b64_json;
    await img.decode();
    if (seq !== live.seq) return;
    live.ctrl = null;
    const ms = performance.now() - t0;
    live.shown += 1;
    live.last = { prompt, ms, at: performance.now() };
    $("livetime").textContent = `${Math.round(ms)} ms · ${prompt}`;
    $("livefig").hidden = false;
  } catch (e) {
    if (e.name === "AbortError" || seq !== live.seq) return;
    live.ctrl = null;
    $("livetime").textContent = e.message;
    $("livefig").hidden = false;
  }
}

$("prompt").addEventListener("input", liveSchedule);
$("liveon").addEventListener("change", liveSchedule);
