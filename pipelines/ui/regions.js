// rgpt4d VQA page, part 2 of 2 (loaded after ui.js, same global scope): frame 1 on the canvas, boxes drawn with the
// mouse in their Set-of-Marks colours and numbers (palette from GET config = rgpt4d_core.regions.PALETTE), the
// list of <obj_k> tokens and their one-click insertion into the question.
"use strict";

const colour = (id) => state.cfg.palette[(id - 1) % state.cfg.palette.length];
const css = (rgb) => `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
const textColour = (rgb) => (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 ? "#000" : "#fff");  // as regions.py

function drawBox(ctx, box, id, dashed) {
  const { width: w, height: h } = ctx.canvas;
  const rgb = colour(id);
  const [x0, y0, x1, y1] = [box[0] * w, box[1] * h, box[2] * w, box[3] * h];
  ctx.lineWidth = Math.max(2, Math.round(Math.min(w, h) / 112));
  ctx.strokeStyle = css(rgb);
  ctx.setLineDash(dashed ? [6, 4] : []);
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.setLineDash([]);
  const size = Math.max(12, Math.round(Math.min(w, h) / 18));
  ctx.font = `bold ${size}px sans-serif`;
  const tw = ctx.measureText(String(id)).width + size * 0.5;
  const th = size * 1.25;
  const tx = Math.min(Math.max(x0, 0), w - tw);
  const ty = Math.min(Math.max(y0, 0), h - th);
  ctx.fillStyle = css(rgb);
  ctx.fillRect(tx, ty, tw, th);
  ctx.fillStyle = textColour(rgb);
  ctx.textBaseline = "middle";
  ctx.fillText(String(id), tx + size * 0.25, ty + th / 2);
}

function nextId() {
  const used = new Set(state.boxes.map((b) => b.id));
  let id = 1;
  while (used.has(id)) id += 1;
  return id;
}

function draw() {
  const canvas = $("frame-canvas");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#222";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!state.frame) return;
  ctx.imageSmoothingEnabled = canvas.width < state.frame.width;  // small frames are shown pixel for pixel
  ctx.drawImage(state.frame.img, 0, 0, canvas.width, canvas.height);
  for (const b of state.boxes) drawBox(ctx, b.box, b.id, false);
  if (state.drag) drawBox(ctx, normalised(state.drag), nextId(), true);
}

function normalised(d) {
  const r4 = (v) => Math.round(Math.min(Math.max(v, 0), 1) * 10000) / 10000;
  return [r4(Math.min(d.x0, d.x1)), r4(Math.min(d.y0, d.y1)), r4(Math.max(d.x0, d.x1)), r4(Math.max(d.y0, d.y1))];
}

function pointer(ev) {
  const r = $("frame-canvas").getBoundingClientRect();
  return { x: (ev.clientX - r.left) / r.width, y: (ev.clientY - r.top) / r.height, w: r.width, h: r.height };
}

function startDrag(ev) {
  if (ev.button !== 0 || !state.frame) return;
  ev.preventDefault();
  const p = pointer(ev);
  state.drag = { x0: p.x, y0: p.y, x1: p.x, y1: p.y };
}

function moveDrag(ev) {
  if (!state.drag) return;
  const p = pointer(ev);
  Object.assign(state.drag, { x1: p.x, y1: p.y });
  draw();
}

function endDrag(ev) {
  if (!state.drag) return;
  moveDrag(ev);
  const p = pointer(ev);
  const box = normalised(state.drag);
  state.drag = null;
  clearErrors("regions-error");
  if ((box[2] - box[0]) * p.w < 4 || (box[3] - box[1]) * p.h < 4) { draw(); return; }  // a click, not a box
  if (state.boxes.length >= state.cfg.max_regions) {
    showError("regions-error", `At most ${state.cfg.max_regions} boxes per question.`);
  } else {
    state.boxes.push({ id: nextId(), box, label: null });
    state.boxes.sort((a, b) => a.id - b.id);
  }
  renderRegions();
  draw();
}

function insertToken(token) {
  const q = $("question");
  const start = q.selectionStart ?? q.value.length;
  const end = q.selectionEnd ?? start;
  const before = q.value.slice(0, start);
  const after = q.value.slice(end);
  const lead = before && !/\s$/.test(before) ? " " : "";
  const tail = after && !/^[\s?.,!;:]/.test(after) ? " " : "";
  q.value = before + lead + token + tail + after;
  const caret = (before + lead + token + tail).length;
  q.focus();
  q.setSelectionRange(caret, caret);
  clearErrors("question-error");
}

function renderRegions() {
  const list = $("regions");
  list.replaceChildren();
  for (const b of state.boxes) {
    const li = document.createElement("li");
    li.dataset.obj = String(b.id);
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.textContent = String(b.id);
    sw.style.backgroundColor = css(colour(b.id));
    sw.style.color = textColour(colour(b.id));
    const ins = document.createElement("button");
    ins.type = "button";
    ins.className = "insert token";
    ins.id = `insert-obj-${b.id}`;
    ins.textContent = `<obj_${b.id}>`;
    ins.title = "Insert into the question";
    ins.addEventListener("click", () => insertToken(`<obj_${b.id}>`));
    const where = document.createElement("span");
    where.className = "muted";
    where.textContent = `[${b.box.map((v) => v.toFixed(3)).join(", ")}]${b.label ? ` ${b.label}` : ""}`;
    const rm = document.createElement("button");
    rm.type = "button";
    rm.textContent = "Remove";
    rm.addEventListener("click", () => { state.boxes = state.boxes.filter((x) => x !== b); renderRegions(); draw(); });
    li.append(sw, ins, where, rm);
    list.append(li);
  }
  $("regions-clear").hidden = state.boxes.length === 0;
}

