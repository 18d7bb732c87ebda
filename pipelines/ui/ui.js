// rgpt4d VQA page, part 1 of 2 (served at /ui/ by pipelines/_serve_ui.py; regions.js draws the boxes). Plain
// JavaScript, no libraries, no external requests: GET config + examples, POST frame (the frame-1 preview), and
// POST ../v1/vqa (the API every client uses).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { cfg: null, source: null, sourceError: "", frame: null, boxes: [], drag: null, expected: null };
const ERROR_BOXES = ["page-error", "video-error", "regions-error", "question-error", "options-error", "form-error"];

// ------------------------------------------------------------------------------------------ errors and requests
function showError(id, message) {
  const el = $(id);
  el.textContent = message;
  el.hidden = false;
  const field = el.closest(".field");
  if (field) field.classList.add("has-error");
}

function clearErrors(...ids) {
  for (const id of ids.length ? ids : ERROR_BOXES) {
    const el = $(id);
    el.textContent = "";
    el.hidden = true;
    const field = el.closest(".field");
    if (field && ![...field.querySelectorAll(".error")].some((e) => !e.hidden)) field.classList.remove("has-error");
  }
}

const mb = (bytes) => `${(bytes / (1024 * 1024)).toFixed(1)} MB`;

function errorBox(err) {  // the field at fault ("request." prefixes come from multipart uploads)
  const field = (err.field || "").replace(/^request\./, "");
  if (err.code === "media_too_large" || err.code === "body_too_large") return "video-error";
  if (field.startsWith("video") || field.startsWith("messages")) return "video-error";
  if (field.startsWith("regions")) return "regions-error";
  if (field.startsWith("question")) return "question-error";
  if (field.startsWith("options")) return "options-error";
  return "form-error";
}

function readable(err, status) {
  const cfg = state.cfg || {};
  const lead = {
    media_too_large: `The video is larger than this server accepts (${mb(cfg.max_upload_bytes || 0)}).`,
    body_too_large: `The request is larger than this server accepts (${mb(cfg.max_body_bytes || 0)}).`,
    video_corrupt: "The video could not be decoded: the file is corrupt or not a video.",
    video_truncated: "The video could not be decoded: the file is truncated or not a video.",
    media_not_found: "There is no such file under the server's media root.",
    media_forbidden: "The server refuses this video location.",
    network: "The server could not be reached.",
  }[err.code];
  const raw = String(err.message || err.code || "error");
  const message = raw.length > 400 ? `${raw.slice(0, 400)}…` : raw;
  const detail = status ? `${message} (HTTP ${status}, ${err.code})` : message;
  return lead ? `${lead}\n${detail}` : detail;
}

function report(res) {
  showError(errorBox(res.error), readable(res.error, res.status));
}

async function api(url, init = {}) {
  const timeoutMs = 1000 * ((state.cfg && state.cfg.request_timeout_s) || 120) + 5000;
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  let resp;
  try {
    resp = await fetch(url, { ...init, signal: ctrl.signal, headers: { Accept: "application/json", ...(init.headers || {}) } });
  } catch (e) {
    clearTimeout(timer);
    const message = e.name === "AbortError" ? `no answer within ${timeoutMs / 1000} s` : String(e.message || e);
    return { ok: false, status: 0, error: { code: "network", field: null, message } };
  }
  const text = await resp.text().catch(() => "");
  clearTimeout(timer);
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (resp.ok && body) return { ok: true, status: resp.status, body };
  const error = body && body.error ? body.error
    : { code: `http_${resp.status}`, field: null, message: `${resp.statusText || "error"}: ${text.slice(0, 300)}` };
  return { ok: false, status: resp.status, error };
}

const jsonPost = (body) => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

// ------------------------------------------------------------------------------------------ video sources
function resetVideo() {
  Object.assign(state, { source: null, sourceError: "", frame: null, boxes: [], drag: null, expected: null });
  clearErrors("video-error", "regions-error", "form-error");
  $("result").hidden = true;
  renderRegions();
  draw();
}

async function loadVideo(source) {
  resetVideo();
  if (source.kind === "file" && source.file.size > state.cfg.max_upload_bytes) {
    state.sourceError = `${source.name} is ${mb(source.file.size)}; this server accepts videos up to ` +
      `${mb(state.cfg.max_upload_bytes)} (security.max_upload_bytes). Choose a smaller file.`;
    showError("video-error", state.sourceError);
    $("frame-info").textContent = "No frame: the file was not sent.";
    return false;
  }
  state.source = source;  // kept even if the preview fails: the API's answer on submit is the judge
  $("frame-info").textContent = "Decoding frame 1…";
  let init;
  if (source.kind === "file") {
    init = { method: "POST", body: new FormData() };
    init.body.append("video", source.file, source.name);
  } else {
    init = jsonPost({ path: source.path });
  }
  const res = await api("frame", init);
  if (!res.ok) {
    report(res);
    $("frame-info").textContent = "No frame: the server could not read this video.";
    return false;
  }
  const img = new Image();
  img.src = res.body.image;
  await img.decode();
  const f = res.body;
  state.frame = { img, width: f.width, height: f.height };
  const canvas = $("frame-canvas");
  const scale = Math.min(720 / f.width, 480 / f.height);
  canvas.width = Math.round(f.width * scale);
  canvas.height = Math.round(f.height * scale);
  $("frame-info").textContent = `Frame 1 of ${source.name}: ${f.width}×${f.height} px, ${f.duration_s.toFixed(2)} s, ` +
    `${f.num_source_frames} frames at ${f.fps.toFixed(1)} fps. Drag on it to draw a box.`;
  draw();
  return true;
}

async function loadExample(ex) {
  $("video-path").value = ex.video;
  $("video-file").value = "";
  if (!(await loadVideo({ kind: "path", path: ex.video, name: ex.video }))) return;
  state.boxes = ex.regions.map((r) => ({ id: r.obj_id, box: r.box, label: r.label }));
  state.expected = ex.answer;
  $("question").value = ex.question;
  renderOptions(ex.options);
  renderRegions();
  draw();
}

// ------------------------------------------------------------------------------------------ options
function renderOptions(values) {
  const list = $("options");
  list.replaceChildren();
  values.forEach((v, i) => {
    const li = document.createElement("li");
    const tag = document.createElement("span");
    tag.className = "letter-tag";
    tag.textContent = state.cfg.option_letters[i];
    const input = document.createElement("input");
    input.type = "text";
    input.className = "option-input";
    input.id = `option-${i}`;
    input.value = v;
    input.placeholder = `option ${state.cfg.option_letters[i]}`;
    const rm = document.createElement("button");
    rm.type = "button";
    rm.textContent = "Remove";
    rm.disabled = values.length <= state.cfg.min_options;
    rm.addEventListener("click", () => renderOptions(optionValues().filter((_, j) => j !== i)));
    li.append(tag, input, rm);
    list.append(li);
  });
  $("option-add").disabled = values.length >= state.cfg.max_options;
}

const optionValues = () => [...document.querySelectorAll("#options input")].map((i) => i.value);

// ------------------------------------------------------------------------------------------ asking
async function submit() {
  clearErrors();
  const question = $("question").value.trim();
  const options = optionValues().map((v) => v.trim()).filter((v) => v);
  let bad = false;
  if (!state.source) {
    showError("video-error", state.sourceError || "Choose a video: upload a file, give a path under the media root, or pick an example.");
    bad = true;
  }
  if (!question) { showError("question-error", "Write a question; refer to a box with its <obj_k> token."); bad = true; }
  if (options.length < state.cfg.min_options || options.length > state.cfg.max_options) {
    showError("options-error", `Give ${state.cfg.min_options} to ${state.cfg.max_options} options (${options.length} given).`);
    bad = true;
  }
  if (bad) return;
  const payload = { question, options, include_media: true,
    regions: state.boxes.map((b) => (b.label ? { obj_id: b.id, box: b.box, label: b.label } : { obj_id: b.id, box: b.box })) };
  let init;
  if (state.source.kind === "file") {
    init = { method: "POST", body: new FormData() };
    init.body.append("video", state.source.file, state.source.name);
    init.body.append("request", JSON.stringify(payload));
  } else {
    init = jsonPost({ ...payload, video: { path: state.source.path } });
  }
  $("submit").disabled = true;
  $("result").hidden = true;
  $("status").textContent = "Asking the model…";
  let res;
  try { res = await api("../v1/vqa", init); } finally { $("submit").disabled = false; }
  if (!res.ok) {
    report(res);
    $("status").textContent = res.status ? `The server answered HTTP ${res.status}: see the message above.` : "";
    return;
  }
  $("status").textContent = "";
  showResult(res.body);
}

function showResult(b) {
  $("answer-letter").textContent = b.answer_letter || "?";
  $("answer").textContent = b.answer ?? `no option recognised in the output (extractor: ${b.method})`;
  $("raw-output").textContent = b.raw_output === "" ? "(empty)" : b.raw_output;
  $("t-decode").textContent = b.timings.decode_ms.toFixed(1);
  $("t-generate").textContent = b.timings.generate_ms.toFixed(1);
  $("t-total").textContent = b.timings.total_ms.toFixed(1);
  const expected = state.expected ? ` · benchmark answer: ${state.expected}` : "";
  $("details").textContent = `model ${b.model} · request ${b.request_id} · batch of ${b.batch_size} · ` +
    `${b.num_frames} frames of a ${b.duration_s.toFixed(2)} s video · extractor ${b.method}${expected}`;
  const frames = $("frames");
  frames.replaceChildren();
  const media = b.media;
  if (!media) frames.textContent = "This engine did not return the frames.";
  (media ? media.frames : []).forEach((f, i) => {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = f.image;
    img.alt = `frame ${i + 1} at ${f.timestamp_s.toFixed(2)} s`;
    const cap = document.createElement("figcaption");
    cap.textContent = `#${i + 1} · ${f.timestamp_s.toFixed(2)} s`;
    cap.title = `source frame ${f.index}`;
    fig.append(img, cap);
    frames.append(fig);
  });
  const som = $("som-image");
  som.hidden = !media;
  if (media) som.src = media.som_image;
  $("result").hidden = false;
  $("result").scrollIntoView({ block: "nearest" });
}

// ------------------------------------------------------------------------------------------ start-up
function guarded(fn) {  // no handler may leave the page blank or silent
  return (...args) => Promise.resolve().then(() => fn(...args)).catch((e) => showError("form-error", `Unexpected error in the page: ${e.message || e}`));
}

async function init() {
  const res = await api("config");
  if (!res.ok) { showError("page-error", `Could not load the page's settings: ${readable(res.error, res.status)}`); return; }
  state.cfg = res.body;
  $("model-line").textContent = `Model ${state.cfg.model}: ${state.cfg.num_frames} frames per video, answers through POST /v1/vqa.`;
  $("upload-limit").textContent = `up to ${mb(state.cfg.max_upload_bytes)}`;
  renderOptions(["", "", "", ""]);
  const canvas = $("frame-canvas");
  canvas.addEventListener("mousedown", startDrag);
  window.addEventListener("mousemove", moveDrag);
  window.addEventListener("mouseup", guarded(endDrag));
  $("video-file").addEventListener("change", guarded(() => {
    const file = $("video-file").files[0];
    if (file) { $("video-path").value = ""; return loadVideo({ kind: "file", file, name: file.name }); }
    return undefined;
  }));
  $("video-path-load").addEventListener("click", guarded(() => {
    const path = $("video-path").value.trim();
    if (!path) { showError("video-error", "Type a path under the server's media root first."); return undefined; }
    $("video-file").value = "";
    return loadVideo({ kind: "path", path, name: path });
  }));
  $("regions-clear").addEventListener("click", () => { state.boxes = []; renderRegions(); draw(); });
  $("option-add").addEventListener("click", () => renderOptions([...optionValues(), ""]));
  $("submit").addEventListener("click", guarded(submit));
  $("question").addEventListener("input", () => clearErrors("question-error"));
  draw();
  const ex = await api("examples");
  const examples = ex.ok ? ex.body.examples : [];
  if (ex.ok && ex.body.note) { $("examples-note").textContent = ex.body.note; $("examples-note").hidden = false; }
  $("examples-box").hidden = examples.length === 0;
  for (const e of examples) {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "example";
    btn.textContent = `${e.task}: ${e.question.length > 60 ? `${e.question.slice(0, 57)}…` : e.question}`;
    btn.title = `${e.id} (${e.video})`;
    btn.addEventListener("click", guarded(() => loadExample(e)));
    $("examples").append(btn);
  }
}

window.addEventListener("error", (e) => showError("page-error", `Unexpected error in the page: ${e.message}`));
window.addEventListener("unhandledrejection", (e) => showError("page-error", `Unexpected error in the page: ${e.reason}`));
document.addEventListener("DOMContentLoaded", guarded(init));
