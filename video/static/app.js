"use strict";
// The video analysis page: upload, live progress (Server-Sent Events), timeline, summaries, chat.
// No framework and no build step; every text from the server is inserted as text, never as HTML.

const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem("videoKey") || "", session: null, frames: new Map(), total: 0,
  started: null, stream: null, observer: null };

function headers(extra = {}) {
  return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (response.status === 401) { $("key-form").hidden = false; }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) { throw new Error(body?.error?.message || `request failed (HTTP ${response.status})`); }
  return body;
}

function label(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${String(minutes).padStart(2, "0")}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

function duration(seconds) {
  if (!isFinite(seconds)) return "…";
  const s = Math.max(0, Math.round(seconds));
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

// ---- upload -------------------------------------------------------------------------------
function chooseFile(file) {
  state.file = file;
  $("file-name").textContent = file ? `${file.name} (${(file.size / 1048576).toFixed(1)} MB)` : "";
  $("upload-button").disabled = !file;
  $("upload-error").hidden = true;
}

function setupUpload() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); chooseFile(e.dataTransfer.files[0]); });
  $("file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
  $("upload-form").addEventListener("submit", (e) => { e.preventDefault(); upload(); });
}

function upload() {
  const form = new FormData();
  form.append("file", state.file);
  form.append("fps", $("fps").value || "1");
  if ($("max-frames").value) form.append("max_frames", $("max-frames").value);
  const request = new XMLHttpRequest();
  const bar = $("upload-progress");
  $("upload-error").hidden = true;
  bar.hidden = false; bar.value = 0;
  $("upload-button").disabled = true;
  request.upload.addEventListener("progress", (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; });
  request.addEventListener("load", () => {
    $("upload-button").disabled = false;
    let body = null;
    try { body = JSON.parse(request.responseText); } catch { body = null; }
    if (request.status !== 200) {
      if (request.status === 401) $("key-form").hidden = false;
      showUploadError(body?.error?.message || `upload failed (HTTP ${request.status})`);
      return;
    }
    bar.value = 100;
    bar.hidden = true;
    chooseFile(null);
    $("file").value = "";
    openSession(body.session_id);
    loadSessions();
  });
  request.addEventListener("error", () => { $("upload-button").disabled = false; showUploadError("the upload failed: network error"); });
  request.open("POST", "/upload");
  if (state.key) request.setRequestHeader("Authorization", `Bearer ${state.key}`);
  request.send(form);
}

function showUploadError(message) {
  const error = $("upload-error");
  error.textContent = message;
  error.hidden = false;
  $("upload-progress").hidden = true;
}

// ---- a session ----------------------------------------------------------------------------
async function openSession(id) {
  if (state.stream) state.stream.abort();
  state.session = id; state.frames = new Map(); state.started = null;
  $("session").hidden = false;
  showConversation();
  $("timeline").replaceChildren();
  history.replaceState(null, "", `#session=${id}`);
  const status = await api(`/status/${id}`);
  renderStatus(status);
  await refreshFrames(id);
  renderTimeline();
  loadSummaries();
  loadTranscript(status);
  if (status.status === "queued" || status.status === "processing") follow(id);
  $("session").scrollIntoView({ behavior: "smooth", block: "start" });
}

// Every stored frame, read again: frames described between a read and the event stream's start
// reach the page this way (the stream only carries what happens after it starts).
async function refreshFrames(id) {
  const frames = await api(`/sessions/${id}/frames`);
  if (state.session !== id) return;
  for (const frame of frames.frames) state.frames.set(frame.index, frame);
}

function renderStatus(status) {
  state.total = Math.max(status.total_frames, state.frames.size);
  $("job-progress").value = status.progress_percentage;
  const done = status.processed_frames + (status.failed_frames || 0);
  let text = `${status.status}: ${status.processed_frames} of ${status.total_frames} frames described (${status.progress_percentage}%)`;
  if (status.failed_frames) text += `, ${status.failed_frames} failed`;
  if (status.status === "processing" && state.started && done > state.started.done && Date.now() - state.started.time > 1000) {
    const elapsed = (Date.now() - state.started.time) / 1000;
    const rate = (done - state.started.done) / Math.max(elapsed, 0.001);
    text += ` · elapsed ${duration(elapsed)} · about ${duration((status.total_frames - done) / rate)} left`;
  }
  if (status.error) text += ` · ${status.error}`;
  if (status.clip_mode === "video") text += " · described as video clips";
  if (status.audio === "transcribing") text += ` · soundtrack: ${status.speech_percentage ?? 0}% transcribed`;
  else if (status.audio === "not transcribed") text += " · soundtrack not transcribed";
  $("job-text").textContent = text;
  $("warnings").replaceChildren(...(status.warnings || []).map((w) => Object.assign(document.createElement("li"), { textContent: w })));
}

async function follow(id) {
  const controller = new AbortController();
  state.stream = controller;
  try {
    const response = await fetch(`/sessions/${id}/events`, { headers: headers(), signal: controller.signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (data && state.session === id) onEvent(JSON.parse(data));
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") $("job-text").textContent += ` · live updates stopped: ${error.message}`;
  }
}

function onEvent(event) {
  if (!state.started && event.status === "processing") {
    state.started = { time: Date.now(), done: event.processed_frames + (event.failed_frames || 0) };
  }
  if (event.event === "frame") {
    for (const frame of event.frames) {
      state.frames.set(frame.index, { index: frame.index, timestamp_s: frame.timestamp_s, timestamp: label(frame.timestamp_s),
        description: event.description, error: event.frame_error, thumbnail_url: `/sessions/${state.session}/frames/${frame.index}.jpg`,
        clip_start_s: event.clip ? event.clip.start_s : null, clip_end_s: event.clip ? event.clip.end_s : null });
      updateFrame(frame.index);
    }
  }
  if (event.event === "summary") loadSummaries();
  if (event.event === "speech") loadTranscript(event);
  renderStatus(event);
  if (event.event === "completed" || event.event === "failed" || !event.event) {
    // The stream's first event (its current status) and its end: frames read whole again.
    const id = state.session;
    refreshFrames(id).then(() => { if (state.session === id) renderTimeline(); });
  }
  if (event.event === "completed" || event.event === "failed") { loadSummaries(); loadSessions(); loadTranscript(event); }
}

// ---- timeline -----------------------------------------------------------------------------
function renderTimeline() {
  const count = Math.max(state.total, state.frames.size);
  const items = [];
  for (let index = 0; index < count; index++) items.push(frameCard(index));
  $("timeline").replaceChildren(...items);
}

function updateFrame(index) {
  const existing = $(`frame-${index}`);
  const card = frameCard(index);
  if (existing) existing.replaceWith(card); else $("timeline").append(card);
}

function frameCard(index) {
  const frame = state.frames.get(index);
  const item = document.createElement("li");
  item.id = `frame-${index}`;
  item.className = `frame ${!frame ? "pending" : frame.description == null ? "failed" : ""}`;
  const button = document.createElement("button");
  button.type = "button";
  const image = document.createElement("img");
  image.className = "thumb";
  image.alt = frame ? `Frame at ${frame.timestamp}` : "Frame not described yet";
  const meta = document.createElement("div");
  meta.className = "meta";
  const time = document.createElement("time");
  time.textContent = frame ? when(frame) : `frame ${index + 1}`;
  const text = document.createElement("p");
  text.textContent = !frame ? "waiting for a description…" : frame.description ?? `failed: ${frame.error}`;
  meta.append(time, text);
  button.append(image, meta);
  item.append(button);
  if (frame) {
    image.dataset.src = frame.thumbnail_url;
    observe(image);
    button.setAttribute("aria-label", `Frame at ${frame.timestamp}: open`);
    button.addEventListener("click", () => view(frame, image));
  } else {
    button.disabled = true;
  }
  return item;
}

// Thumbnails load when they scroll into view, with the API key, so long videos stay light.
function observe(image) {
  if (!state.observer) {
    state.observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        state.observer.unobserve(entry.target);
        loadThumbnail(entry.target);
      }
    }, { rootMargin: "300px" });
  }
  state.observer.observe(image);
}

async function loadThumbnail(image) {
  try {
    const response = await fetch(image.dataset.src, { headers: headers() });
    if (response.ok) image.src = URL.createObjectURL(await response.blob());
  } catch { /* the placeholder stays */ }
}

// A frame described in a clip shows the clip's range: its description is the clip's.
function when(frame) {
  if (frame.clip_start_s == null) return frame.timestamp;
  return `${frame.timestamp} (clip ${label(frame.clip_start_s)}–${label(frame.clip_end_s)})`;
}

function view(frame, image) {
  $("viewer-title").textContent = `Frame at ${when(frame)}`;
  $("viewer-image").src = image.src || "";
  $("viewer-image").alt = `Frame at ${frame.timestamp}`;
  $("viewer-text").textContent = frame.description ?? `failed: ${frame.error}`;
  $("viewer").showModal();
}

function jumpTo(seconds) {
  let best = null;
  for (const frame of state.frames.values()) {
    if (!best || Math.abs(frame.timestamp_s - seconds) < Math.abs(best.timestamp_s - seconds)) best = frame;
  }
  if (!best) return;
  const card = $(`frame-${best.index}`);
  document.querySelectorAll(".frame.highlight").forEach((c) => c.classList.remove("highlight"));
  card.classList.add("highlight");
  card.scrollIntoView({ behavior: "smooth", block: "center" });
  card.querySelector("button").focus({ preventScroll: true });
}

// ---- transcript ---------------------------------------------------------------------------
async function loadTranscript(status) {
  const audio = status && status.audio;
  $("transcript-panel").hidden = !audio || audio === "none";
  if ($("transcript-panel").hidden || !state.session) return;
  const session = state.session;
  const transcript = await api(`/sessions/${session}/transcript`);
  if (state.session !== session) return;
  const words = { "not transcribed": "The soundtrack is not transcribed.", transcribing: "Transcribing…", done: "" };
  let note = words[transcript.audio] ?? "";
  if (!transcript.segments.length && transcript.audio === "done") note = "Nothing was said.";
  if (transcript.failed.length) note += ` ${transcript.failed.length} stretch(es) could not be transcribed.`;
  $("transcript-status").textContent = note.trim();
  $("transcript").replaceChildren(...transcript.segments.map((segment) => {
    const item = document.createElement("li");
    const button = Object.assign(document.createElement("button"), { type: "button" });
    button.setAttribute("aria-label", `Said at ${segment.start}: ${segment.text}. Open this moment`);
    button.append(Object.assign(document.createElement("time"), { textContent: segment.start }), document.createTextNode(segment.text));
    button.addEventListener("click", () => jumpTo(segment.start_s));
    item.append(button);
    return item;
  }));
}

// ---- summaries and chat -------------------------------------------------------------------
async function loadSummaries() {
  if (!state.session) return;
  const { summaries } = await api(`/summaries/${state.session}`);
  if (!summaries.length) return;
  $("summaries").replaceChildren(...summaries.map((s) => {
    const item = document.createElement("li");
    const range = document.createElement("strong");
    range.textContent = `${s.time_range} `;
    item.append(range, document.createTextNode(s.summary));
    return item;
  }));
}

function withTimestampLinks(text) {
  const fragment = document.createDocumentFragment();
  const pattern = /\[(\d{1,2}):(\d{2}(?:\.\d+)?)\]/g;
  let last = 0, match;
  while ((match = pattern.exec(text))) {
    fragment.append(document.createTextNode(text.slice(last, match.index)));
    const seconds = Number(match[1]) * 60 + Number(match[2]);
    const link = document.createElement("a");
    link.href = "#";
    link.className = "cite";
    link.textContent = match[0];
    link.setAttribute("aria-label", `Go to the frame at ${match[1]}:${match[2]}`);
    link.addEventListener("click", (e) => { e.preventDefault(); jumpTo(seconds); });
    fragment.append(link);
    last = match.index + match[0].length;
  }
  fragment.append(document.createTextNode(text.slice(last)));
  return fragment;
}

// A conversation a session: earlier turns go with each question, so "and after that?" works;
// kept in this browser (localStorage) until "New conversation".
function conversation() {
  try { return JSON.parse(localStorage.getItem(`conversation:${state.session}`) || "[]"); } catch { return []; }
}

function remember(turns) {
  localStorage.setItem(`conversation:${state.session}`, JSON.stringify(turns.slice(-40)));
}

function showTurn(question) {
  const article = document.createElement("article");
  const asked = Object.assign(document.createElement("p"), { className: "question", textContent: question });
  const answer = Object.assign(document.createElement("p"), { className: "answer" });
  article.append(asked, answer);
  $("answers").append(article);
  return { article, answer };
}

function showConversation() {
  $("answers").replaceChildren();
  const turns = conversation();
  for (let i = 0; i + 1 < turns.length; i += 2) {
    showTurn(turns[i].content).answer.replaceChildren(withTimestampLinks(turns[i + 1].content));
  }
}

// Server-Sent Events from a POST: answer.delta pieces as they are written, then answer.done.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) yield { name, data: JSON.parse(data) };
    }
  }
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || !state.session) return;
  const history = conversation();
  const { article, answer } = showTurn(question);
  answer.textContent = "thinking…";
  answer.setAttribute("aria-busy", "true");
  $("question").value = "";
  try {
    const response = await fetch("/chat", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ session_id: state.session, question, history, stream: true }),
    });
    if (response.status === 401) { $("key-form").hidden = false; }
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new Error(body?.error?.message || `request failed (HTTP ${response.status})`);
    }
    let written = "", result = null;
    for await (const { name, data } of events(response)) {
      if (name === "answer.delta") {
        written += data.text;
        answer.textContent = written;
      } else if (name === "answer.done") {
        result = data;
      } else if (name === "error") {
        throw new Error(data.error?.message || "the answer stopped");
      }
    }
    if (!result) throw new Error("the answer stopped before it was complete");
    answer.replaceChildren(withTimestampLinks(result.answer));
    remember([...history, { role: "user", content: question }, { role: "assistant", content: result.answer }]);
    const note = Object.assign(document.createElement("p"), { className: "note" });
    const looked = result.looked ? ` · looked again at ${result.looked_at.map((m) => m.timestamp).join(", ")}` : "";
    note.textContent = `Based on ${result.total_frames_in_context} frame descriptions and ${result.context_batches_used} part(s)` +
      looked + ` · the video is ${result.progress_percentage}% processed, up to ${label(result.covered_until_s)}`;
    article.append(note);
    for (const text of result.notes || []) {
      article.append(Object.assign(document.createElement("p"), { className: "note", textContent: text }));
    }
  } catch (error) {
    answer.textContent = error.message;
    answer.className = "error";
  } finally {
    answer.removeAttribute("aria-busy");
  }
}

// ---- search across videos -----------------------------------------------------------------
async function search(event) {
  event.preventDefault();
  const query = $("search").value.trim();
  if (!query) return;
  $("search-status").textContent = "searching…";
  $("search-results").replaceChildren();
  let results;
  try {
    ({ results } = await api(`/search?q=${encodeURIComponent(query)}&limit=20`));
  } catch (error) {
    $("search-status").textContent = error.message;
    return;
  }
  $("search-status").textContent = results.length ? `${results.length} moment(s) found` : "Nothing found.";
  $("search-results").replaceChildren(...results.map((r) => {
    const item = document.createElement("li");
    const button = Object.assign(document.createElement("button"), { type: "button", className: "result" });
    button.setAttribute("aria-label", `Open ${r.filename} at ${r.timestamp}`);
    const image = Object.assign(document.createElement("img"), { className: "thumb", alt: "" });
    image.dataset.src = r.thumbnail_url;
    const meta = Object.assign(document.createElement("span"), { className: "meta" });
    const said = r.kind === "speech" ? " · said" : "";
    const where = Object.assign(document.createElement("strong"), { textContent: `${r.filename} · ${r.timestamp}${said}` });
    meta.append(where, Object.assign(document.createElement("span"), { textContent: r.description }));
    button.append(image, meta);
    button.addEventListener("click", () => openMoment(r.session_id, r.timestamp_s));
    item.append(button);
    observe(image);
    return item;
  }));
}

async function openMoment(sessionId, seconds) {
  if (state.session !== sessionId) await openSession(sessionId);
  jumpTo(seconds);
}

// ---- past sessions ------------------------------------------------------------------------
async function loadSessions() {
  let sessions;
  try { sessions = await api("/sessions"); } catch { return; }
  if (!sessions.length) {
    $("sessions").replaceChildren(Object.assign(document.createElement("li"), { className: "muted", textContent: "None yet." }));
    return;
  }
  $("sessions").replaceChildren(...sessions.map((s) => {
    const item = document.createElement("li");
    const open = document.createElement("a");
    open.href = `#session=${s.session_id}`;
    open.textContent = s.filename;
    open.addEventListener("click", (e) => { e.preventDefault(); openSession(s.session_id); });
    const info = Object.assign(document.createElement("span"), { className: "muted",
      textContent: `${s.status}, ${s.progress_percentage}% · ${duration(s.duration_s)} · ${new Date(s.created_at * 1000).toLocaleString()}` });
    const remove = Object.assign(document.createElement("button"), { type: "button", className: "secondary", textContent: "Delete" });
    remove.setAttribute("aria-label", `Delete ${s.filename}`);
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete ${s.filename} and its descriptions?`)) return;
      await api(`/sessions/${s.session_id}`, { method: "DELETE" });
      if (state.session === s.session_id) { state.stream?.abort(); state.session = null; $("session").hidden = true; history.replaceState(null, "", "#"); }
      loadSessions();
    });
    item.append(open, info, remove);
    return item;
  }));
}

function setupKey() {
  $("api-key").value = state.key;
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("api-key").value.trim();
    localStorage.setItem("videoKey", state.key);
    loadSessions();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupKey();
  setupUpload();
  $("chat-form").addEventListener("submit", ask);
  $("new-conversation").addEventListener("click", () => { remember([]); showConversation(); });
  $("search-form").addEventListener("submit", search);
  loadSessions();
  const match = location.hash.match(/session=([0-9a-f-]+)/);
  if (match) openSession(match[1]).catch(() => history.replaceState(null, "", "#"));
});
