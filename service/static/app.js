// The page of the singer retrieval service: record or choose a query, show who sings,
// play similar tracks, browse and edit the catalogue. Plain browser JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "singer-api-key"; // sessionStorage only: gone when the tab closes
const PAGE_SIZE = 20;
const MAX_RECORD_S = 60;
// Distinct colours with white text contrast >= 4.5 (singer colours on the time bar).
const PALETTE = ["#0b5cad", "#a4161a", "#176b2c", "#7a3e9d", "#8a5a00", "#00707a", "#b5256e", "#44505c"];

const state = { query: null, queryName: null, recorder: null, singerOffset: 0, singerTotal: 0,
                tracksSinger: null, tracksAfter: 0, colours: new Map() };

// -- errors ------------------------------------------------------------------------------
/** A sentence for the person at the page, from the service's JSON error body. */
function explain(status, body) {
  const code = body && body.code;
  const mb = (n) => (n / 1048576).toFixed(n < 1048576 ? 2 : 0);
  switch (code) {
    case "audio_too_short":
      return ["The recording is too short.",
        `It lasts ${body.duration_s} s; the service needs at least ${body.min_duration_s} s of singing. Record a longer take or choose a longer file.`];
    case "no_voiced_segment":
      return ["No singing voice was found.",
        "Sing closer to the microphone or louder, or choose a recording in which someone sings."];
    case "unsupported_format":
      return ["This file is not audio the service can read.",
        `Choose an audio file in one of these formats: ${(body.supported_formats || []).join(", ")}.`];
    case "upload_too_large":
      return ["The file is too large.",
        `The limit is ${mb(body.max_upload_bytes)} MB. Cut a shorter excerpt (a minute of singing is plenty) or compress it (mp3, m4a).`];
    case "invalid_audio":
      return ["The audio cannot be used.", `${body.detail}. Choose another recording.`];
    case "unauthorized":
      return ["The API key is missing or wrong.", "Enter the service's API key above and try again."];
    case "writes_disabled":
      return ["This service does not accept changes.", "Its operator has not configured an API key."];
    case "duplicate_track":
      return ["This file is already in the catalogue.", body.detail];
    case "not_ready": case "overloaded":
      return ["The service is busy.", "Try again in a few seconds."];
    case "audio_gone": case "audio_not_allowed":
      return ["This track cannot be played.", body.detail];
  }
  const detail = typeof body?.detail === "string" ? body.detail
    : Array.isArray(body?.detail) ? body.detail.map((d) => d.msg).join("; ") : "";
  return [`The service answered ${status || "nothing"}.`, detail || "Check the connection and try again."];
}

function showError(box, status, body) {
  const [title, advice] = explain(status, body);
  box.replaceChildren(el("strong", {}, title), el("span", {}, advice));
  box.dataset.code = (body && body.code) || "";
  box.hidden = false;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// -- HTTP --------------------------------------------------------------------------------
/** POST a form with upload progress (fetch has none). Resolves {status, body}. */
function postForm(url, form, onProgress, headers = {}) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress && onProgress(e.loaded, e.total);
    xhr.upload.onload = () => onProgress && onProgress(1, 1);
    xhr.onload = () => resolve({ status: xhr.status, body: xhr.response });
    xhr.onerror = () => resolve({ status: 0, body: null });
    xhr.send(form);
  });
}

async function getJson(url, options = {}) {
  try {
    const r = await fetch(url, options);
    let body = null;
    try { body = await r.json(); } catch { /* not JSON */ }
    return { status: r.status, body };
  } catch {
    return { status: 0, body: null };
  }
}

// -- the query: recording or file ----------------------------------------------------------
function setQuery(blob, name, label) {
  state.query = blob;
  state.queryName = name;
  $("query-ready").textContent = label;
  const preview = $("query-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob);
  preview.hidden = false;
  $("query-submit").disabled = false;
}

function recorderType() {
  const types = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/ogg", "audio/mp4"];
  return types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || "";
}

async function startRecording() {
  const box = $("query-error");
  box.hidden = true;
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    box.replaceChildren(el("strong", {}, "The microphone is not available."),
      el("span", {}, "Allow this page to use the microphone, or choose a file instead."));
    box.hidden = false;
    return;
  }
  const mimeType = recorderType();
  const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : {});
  const chunks = [];
  recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
  // Level meter: RMS of the analyser's time-domain samples, every animation frame.
  const audioCtx = new AudioContext();
  const analyser = audioCtx.createAnalyser();
  analyser.fftSize = 2048;
  audioCtx.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const started = performance.now();
  let frame = 0;
  const tick = () => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    $("level").value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
    const secs = (performance.now() - started) / 1000;
    $("timer").textContent = `${Math.floor(secs / 60)}:${String(Math.floor(secs % 60)).padStart(2, "0")}`;
    if (secs >= MAX_RECORD_S) stopRecording();
    else frame = requestAnimationFrame(tick);
  };
  recorder.onstop = () => {
    cancelAnimationFrame(frame);
    stream.getTracks().forEach((t) => t.stop());
    audioCtx.close();
    $("level").value = 0;
    const type = recorder.mimeType || mimeType || "audio/webm";
    const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    const blob = new Blob(chunks, { type });
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    setQuery(blob, `recording.${ext}`, `Recording ready (${secs} s, ${type.split(";")[0]}).`);
  };
  state.recorder = recorder;
  recorder.start(250);
  tick();
  const button = $("record-button");
  button.textContent = "■ Stop";
  button.setAttribute("aria-pressed", "true");
  $("query-ready").textContent = "Recording… press Stop when you are done.";
}

function stopRecording() {
  if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
  state.recorder = null;
  const button = $("record-button");
  button.textContent = "● Record";
  button.setAttribute("aria-pressed", "false");
}

function chooseFile(file) {
  if (file) setQuery(file, file.name, `File ready: ${file.name} (${(file.size / 1048576).toFixed(2)} MB).`);
}

// -- sending the query -------------------------------------------------------------------
async function submitQuery(event) {
  event.preventDefault();
  if (!state.query) return;
  const domain = document.querySelector("input[name=domain]:checked").value;
  const target = $("target").value;
  const make = (extra) => {
    const form = new FormData();
    form.append("file", state.query, state.queryName);
    form.append("domain", domain);
    for (const [k, v] of Object.entries(extra)) form.append(k, v);
    return form;
  };
  const box = $("progress-box"), bar = $("progress"), label = $("progress-label");
  const sent = { identify: 0, search: 0 };
  const total = 2 * state.query.size;
  box.hidden = false;
  bar.value = 0;
  label.textContent = "Uploading…";
  $("query-error").hidden = true;
  $("query-submit").disabled = true;
  const progress = (which) => (loaded, all) => {
    sent[which] = all ? (loaded / all) * state.query.size : 0;
    const done = sent.identify + sent.search;
    if (done >= total) {
      label.textContent = "Listening: computing the voice embedding…";
      bar.removeAttribute("value"); // indeterminate while the service embeds
    } else {
      bar.value = (100 * done) / total;
    }
  };
  const [who, similar] = await Promise.all([
    postForm("/identify", make({ top_k: "5" }), progress("identify")),
    postForm("/search", make({ top_k: "10", target }), progress("search")),
  ]);
  box.hidden = true;
  $("query-submit").disabled = false;
  if (who.status !== 200) {
    $("results").hidden = true;
    showError($("query-error"), who.status, who.body);
    return;
  }
  renderAnswer(who.body, similar.status === 200 ? similar.body : null);
  if (similar.status !== 200) showError($("query-error"), similar.status, similar.body);
}

function colourOf(name) {
  if (!state.colours.has(name)) state.colours.set(name, PALETTE[state.colours.size % PALETTE.length]);
  return state.colours.get(name);
}

// Segments (3 s each) below which an "unknown" verdict suggests recording longer (older
// services, whose answers do not say how much singing a firm answer needs).
const SURE_SEGMENTS = 4;

function pct(x) { return `${Math.round(100 * x)}%`; }

// How much singing the answer rests on, and about how much a firm answer needs
// (singing_s, firm_answer_s: docs/open-set.md); "" when the service does not say.
function singingNote(who) {
  if (who.singing_s == null) return "";
  const heard = `Heard ${Math.round(who.singing_s)} s of singing`;
  if (who.firm_answer_s == null) return ` ${heard}.`;
  const need = Math.round(who.firm_answer_s);
  return who.singing_s < who.firm_answer_s && who.verdict !== "known"
    ? ` ${heard}; a firm answer needs about ${need} s: a longer recording may settle it.`
    : ` ${heard} (a firm answer needs about ${need} s).`;
}

function verdictText(who) {
  const top = who.singers[0];
  const conf = top && top.confidence != null ? ` (confidence ${pct(top.confidence)})` : "";
  if (who.verdict === "known" && top) return `Most likely ${top.name}${conf}.` + singingNote(who);
  if (who.verdict === "likely" && top) {
    return `Perhaps ${top.name}${conf}, not certain.` + singingNote(who);
  }
  // A short take's mean vector is noisy: the service's bar is set for its length, so an
  // "unknown" there often means "not enough singing" (docs/open-set.md).
  const short = who.singing_s == null && who.n_segments != null && who.n_segments < SURE_SEGMENTS;
  return "Probably none of the catalogue's singers." +
    (short ? " A longer recording (30 s of singing or more) would give a surer answer." : "") +
    singingNote(who);
}

function renderAnswer(who, similar) {
  state.colours.clear();
  $("results").hidden = false;
  // Verdict, calibrated confidence and how much singing it rests on, when the service says.
  const verdict = $("verdict");
  if (who.verdict) {
    verdict.textContent = verdictText(who);
    verdict.dataset.verdict = who.verdict;
    verdict.hidden = false;
  } else {
    verdict.hidden = true;
  }
  const list = $("singer-list");
  list.replaceChildren(...who.singers.map((s) => {
    const colour = colourOf(s.name);
    const width = Math.max(0, Math.min(1, s.score));
    return el("li", { class: "hit", "data-singer": s.name },
      el("span", { class: "swatch", style: `background:${colour}`, ariaHidden: "true" }),
      el("span", { class: "name" }, s.name),
      el("span", { class: "meta" }, `score ${s.score.toFixed(3)}`),
      s.confidence != null ? el("span", { class: "meta" }, `confidence ${pct(s.confidence)}`) : null,
      el("span", { class: "scorebar", ariaHidden: "true" },
        el("span", { style: `width:${pct(width)};background:${colour}` })));
  }));
  if (!who.singers.length) list.replaceChildren(el("li", {}, "The catalogue has no singers yet: add tracks below."));
  renderQuality(who.quality || (similar && similar.quality), who.domain, who.requested_domain);
  renderSegments(who);
  renderTracks($("track-list"), similar ? similar.tracks : [], true);
}

// When the voice detector hears the other kind of recording than the one chosen: the advice,
// and the kind to ask again as. Flagged vocal takes re-sent as a finished song found their
// singer more often in some tests and less often in others (bench/bleed_branches.py: against
// songs, 0.45 against 0.35 for a cappella takes over instrumentals, 0.77 against 0.79 for
// MIR-1K takes over their own backing), so the advice offers the other kind without a promise.
const OTHER_KIND = {
  mono: ["It sounds like a voice with accompaniment: asking as a finished song may match it better.",
    "mixed", "Ask again as a finished song"],
  mixed: ["It sounds like a voice alone: if it is a vocal take, say so.",
    "mono", "Ask again as a vocal take"],
};
const HEARD_AS = {
  mono: "Heard as a vocal take.",
  mixed: "Heard mostly accompaniment, so it was matched as a finished song.",
};

function renderQuality(quality, domain, requested) {
  const box = $("quality");
  if (!quality) { box.hidden = true; return; }
  const parts = [`voice in ${pct(quality.voiced_fraction)} of the recording`, `${quality.n_segments} segments`];
  const flags = quality.flags || [];
  if (flags.length) parts.push(`warnings: ${flags.join(", ").replaceAll("_", " ")}`);
  box.replaceChildren(`Query: ${parts.join("; ")}.`);
  if (requested === "auto" && HEARD_AS[domain]) box.append(" ", HEARD_AS[domain]);
  const other = flags.includes("domain_mismatch") && OTHER_KIND[domain];
  if (other) {
    const [advice, kind, label] = other;
    const again = el("button", { type: "button", id: "ask-again", "data-domain": kind }, label);
    again.addEventListener("click", () => {
      document.querySelector(`input[name=domain][value=${kind}]`).checked = true;
      $("query-form").requestSubmit();
    });
    box.append(" ", advice, " ", again);
  }
  box.hidden = false;
}

function renderSegments(who) {
  const bar = $("timebar"), legend = $("timebar-legend"), note = $("segments-note");
  const duration = who.duration_s || 0;
  $("timebar-end").textContent = `${duration.toFixed(1)} s`;
  const segments = who.segments || [];
  bar.replaceChildren();
  legend.replaceChildren();
  bar.hidden = $("timebar-axis").hidden = !segments.length;
  if (!segments.length) {
    note.textContent = `${who.n_segments} segments were compared; this service does not report which singer each one resembles.`;
    note.hidden = false;
    bar.setAttribute("aria-label", "No per-segment evidence");
    return;
  }
  note.hidden = true;
  const used = new Set();
  for (const seg of segments) {
    const colour = colourOf(seg.singer);
    used.add(seg.singer);
    const left = (100 * seg.start_s) / duration, width = (100 * (seg.end_s - seg.start_s)) / duration;
    bar.append(el("div", { style: `left:${left}%;width:${width}%;background:${colour}`,
      title: `${seg.start_s.toFixed(1)}–${seg.end_s.toFixed(1)} s: ${seg.singer} (${seg.score.toFixed(2)})`,
      "data-singer": seg.singer }));
  }
  bar.setAttribute("aria-label", segments.map((s) =>
    `${s.start_s.toFixed(1)} to ${s.end_s.toFixed(1)} s: ${s.singer}`).join("; "));
  for (const name of used) {
    legend.append(el("li", {}, el("span", { class: "swatch", style: `background:${colourOf(name)}` }), ` ${name}`));
  }
}

// -- tracks and playing --------------------------------------------------------------------
// Why a track cannot be played (the track's `audio_unavailable`, service/audio_files.py).
const UNPLAYABLE = {
  gone: "the file is no longer where it was indexed",
  outside_roots: "the file lies outside the indexed folders (and SINGER_AUDIO_ROOTS)",
  not_stored: "the uploaded audio was not kept",
};
function trackItem(t, withScore, onDelete) {
  const label = t.title || `track ${t.id}`;
  const kind = t.domain === "mono" ? "vocal take" : "song";
  const item = el("li", { class: "hit", "data-track-id": String(t.id) },
    el("span", { class: "name" }, label),
    el("span", { class: "meta" }, `${t.singer} · ${kind} · ${t.duration_s.toFixed(1)} s`),
    withScore ? el("span", { class: "meta" }, `score ${t.score.toFixed(3)}`) : null);
  if (t.playable === false) {
    item.append(el("span", { class: "unplayable" },
      `audio not available${UNPLAYABLE[t.audio_unavailable] ? `: ${UNPLAYABLE[t.audio_unavailable]}` : ""}`));
  } else {
    item.append(el("button", { type: "button", class: "play", ariaLabel: `Play ${label} by ${t.singer}`,
      onclick: () => play(t, label) }, "▶ Play"));
  }
  if (onDelete) {
    item.append(el("button", { type: "button", class: "delete", ariaLabel: `Delete ${label}`,
      onclick: () => onDelete(t, label) }, "Delete"));
  }
  return item;
}

function renderTracks(list, tracks, withScore) {
  list.replaceChildren(...tracks.map((t) => trackItem(t, withScore)));
  if (!tracks.length) list.replaceChildren(el("li", {}, "No tracks."));
}

function play(track, label) {
  const player = $("player");
  $("player-box").hidden = false;
  player.src = `/tracks/${track.id}/audio`;
  $("player-label").textContent = `Playing: ${label} (${track.singer})`;
  player.play().catch(() => {
    showError($("catalogue-error"), 0, { detail: "The browser could not play this file." });
  });
}

$("player").addEventListener("error", async () => {
  const src = $("player").getAttribute("src");
  if (!src) return;
  const r = await getJson(src, { headers: { Range: "bytes=0-0" } });
  if (r.status >= 400) showError($("catalogue-error"), r.status, r.body);
});

// -- catalogue ----------------------------------------------------------------------------
function apiKeyHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function loadSingers(offset = state.singerOffset) {
  const r = await getJson(`/singers?offset=${offset}&limit=${PAGE_SIZE}`);
  if (r.status !== 200) { showError($("catalogue-error"), r.status, r.body); return; }
  state.singerOffset = offset;
  state.singerTotal = r.body.total;
  const rows = r.body.singers.map((s) => el("tr", { "data-singer": s.name },
    el("td", {}, el("button", { type: "button", ariaLabel: `Show tracks of ${s.name}`,
      onclick: () => loadSingerTracks(s.name) }, s.name)),
    el("td", {}, String(s.n_tracks.mono)), el("td", {}, String(s.n_tracks.mixed))));
  $("singers-table").tBodies[0].replaceChildren(...rows);
  if (!rows.length) $("singers-table").tBodies[0].replaceChildren(el("tr", {}, el("td", { colSpan: 3 }, "No singers yet.")));
  const last = Math.min(offset + PAGE_SIZE, r.body.total);
  $("singers-page").textContent = r.body.total ? `${offset + 1}–${last} of ${r.body.total}` : "";
  $("singers-prev").disabled = offset === 0;
  $("singers-next").disabled = last >= r.body.total;
}

async function loadSingerTracks(name, more = false) {
  if (!more) { state.tracksSinger = name; state.tracksAfter = 0; }
  const q = new URLSearchParams({ singer: name, after: String(state.tracksAfter), limit: String(PAGE_SIZE) });
  const r = await getJson(`/tracks?${q}`);
  if (r.status !== 200) { showError($("catalogue-error"), r.status, r.body); return; }
  $("singer-tracks-title").textContent = `Tracks of ${name}`;
  $("singer-tracks-hint").hidden = true;
  const items = r.body.tracks.map((t) => trackItem(t, false, deleteTrack));
  if (more) $("singer-tracks").append(...items);
  else $("singer-tracks").replaceChildren(...items);
  state.tracksAfter = r.body.next_after || 0;
  $("singer-tracks-more").hidden = r.body.next_after == null;
}

async function deleteTrack(track, label) {
  if (!window.confirm(`Delete “${label}” by ${track.singer} from the catalogue?`)) return;
  $("catalogue-error").hidden = true;
  const r = await getJson(`/tracks/${track.id}`, { method: "DELETE", headers: apiKeyHeaders() });
  if (r.status !== 200) { showError($("catalogue-error"), r.status, r.body); focusKey(r.status); return; }
  $("catalogue-status").textContent = `Deleted “${label}” (track ${track.id}).`;
  await loadSingers();
  if (state.tracksSinger) await loadSingerTracks(state.tracksSinger);
}

function focusKey(status) {
  if (status === 401) $("api-key").focus();
}

async function addTrack(event) {
  event.preventDefault();
  const file = $("add-file").files[0];
  const singer = $("add-singer").value.trim();
  $("catalogue-error").hidden = true;
  if (!file || !singer) {
    $("catalogue-error").replaceChildren(el("strong", {}, "Something is missing."),
      el("span", {}, "Choose an audio file and enter the singer's name."));
    $("catalogue-error").hidden = false;
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("singer", singer);
  form.append("domain", $("add-domain").value);
  if ($("add-title").value.trim()) form.append("title", $("add-title").value.trim());
  $("add-submit").disabled = true;
  $("catalogue-status").textContent = "Uploading and embedding…";
  const r = await postForm("/tracks", form, (l, t) => {
    $("catalogue-status").textContent = l < t ? `Uploading… ${Math.round((100 * l) / t)}%` : "Embedding…";
  }, apiKeyHeaders());
  $("add-submit").disabled = false;
  if (r.status !== 201 && r.status !== 200) {
    $("catalogue-status").textContent = "";
    showError($("catalogue-error"), r.status, r.body);
    focusKey(r.status);
    return;
  }
  const t = r.body;
  $("catalogue-status").textContent = r.status === 201
    ? `Added “${t.title || t.id}” as track ${t.id} by ${t.singer}.`
    : `Already in the catalogue as track ${t.id}.`;
  $("add-form").reset();
  await loadSingers();
  await loadSingerTracks(t.singer);
}

// -- wiring --------------------------------------------------------------------------------
function init() {
  $("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
  $("api-key").addEventListener("input", () => sessionStorage.setItem(KEY_STORE, $("api-key").value));
  $("record-button").addEventListener("click", () => (state.recorder ? stopRecording() : startRecording()));
  if (!window.MediaRecorder || !navigator.mediaDevices) {
    $("record-button").disabled = true;
    $("query-ready").textContent = "This browser cannot record here (recording needs https or localhost); choose a file.";
  }
  $("query-file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    chooseFile(e.dataTransfer.files[0]);
  });
  $("query-form").addEventListener("submit", submitQuery);
  $("add-form").addEventListener("submit", addTrack);
  $("singers-prev").addEventListener("click", () => loadSingers(Math.max(0, state.singerOffset - PAGE_SIZE)));
  $("singers-next").addEventListener("click", () => loadSingers(state.singerOffset + PAGE_SIZE));
  $("singer-tracks-more").addEventListener("click", () => loadSingerTracks(state.tracksSinger, true));
  loadSingers(0);
}

init();
