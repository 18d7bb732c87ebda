"""Recipe probe: train the student SFT-only in ONE process (no Ray, no shards) on a synthetic world; score held-out.

The product trains through Ray Train on precomputed shards (``pipelines/distill.py``); this script is for choosing
a tiny recipe quickly on 2 cores, with the same parts: ``Student`` of the ``tiny`` preset (sizes overridable),
the R4D prompt and chat template (``rgpt4d_core.text.prompts``), the same frame decode and Set-of-Marks image,
and the same answer scoring as the engine (``answer_style``: letter logits, or option likelihood via
``rgpt4d_core.model.option_scoring``). No expert targets, so SFT-only. Examples (docs/results.md)::

    .venv/bin/python -m pipelines.make_synthetic --config conf/synth/experiment.yaml --out out/experiment/synth
    .venv/bin/python scripts/recipe_probe.py --world out/experiment/synth --train-vision --answer-style option \\
        --steps 2000 --seed 0 --out out/experiment/probe_seed0.json
    .venv/bin/python scripts/recipe_probe.py --world out/experiment/synth --blind --answer-style option --steps 2000

``--blind`` trains the same LM on the question text alone (no video, no SoM image): the strongest "answer prior"
baseline a text model can learn. Frames are decoded once per world into ``<world>/probe_cache_<size>_<frames>.npz``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgpt4d_core.losses import latent_loss, sft_loss
from rgpt4d_core.model.option_scoring import choose_option, option_log_likelihoods, option_scores
from rgpt4d_core.model.presets import tiny
from rgpt4d_core.model.projector import ProjectorConfig
from rgpt4d_core.model.region_tracks import QUERY_SPANS, RegionTrackConfig
from rgpt4d_core.model.student import Student, StudentConfig
from rgpt4d_core.model.tpe import TPEConfig
from rgpt4d_core.regions import draw_set_of_marks
from rgpt4d_core.synth.dataset import load_questions
from rgpt4d_core.text.prompts import (
    OPTION_LETTERS,
    build_inference_ids,
    build_training_example,
    mcq_target,
    r4d_user_text,
)
from rgpt4d_core.text.region_refs import token_region_boxes
from rgpt4d_core.text.tokenizer import tiny_tokenizer
from rgpt4d_core.types import VQAItem

sys.path.insert(0, str(Path(__file__).resolve().parent))
from motion_questions import motion_questions  # noqa: E402
from probe_world import World, decode_world, dense_spec, dense_targets, media_tensors  # noqa: E402
from region_aux import RegionAux  # noqa: E402
from tower_pretrain import pretrain_tower, tower_targets  # noqa: E402

#: categories whose answers are classes (not numbers or boxes): their per-answer accuracy shows what was learned
CLASS_TASKS = ("C", "FP", "R", "SR", "T")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True, help="synthetic world root (pipelines.make_synthetic --out)")
    p.add_argument("--answer-style", choices=["letter", "option"], default="option")
    p.add_argument("--train-vision", action="store_true", help="train the vision tower (tiny preset: frozen)")
    p.add_argument("--blind", action="store_true", help="question text only: no video, no SoM image")
    for flag, kind, default in (("--steps", int, 2000), ("--batch", int, 8), ("--lr", float, 1e-3),
                                ("--beta2", float, 0.99), ("--seed", int, 0), ("--threads", int, 2)):  # fmt: skip
        p.add_argument(flag, type=kind, default=default)
    p.add_argument("--size", type=int, default=64, help="frame side, pixels")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--projector", default="mlp_downsample_3x3_fix")
    p.add_argument("--patch", type=int, default=8, help="vision patch side, pixels")
    p.add_argument("--llm-layers", type=int, default=0, help="LLM blocks (0 = the tiny preset's)")
    p.add_argument("--held-out", type=int, default=1500, help="val+test questions scored (fixed sample)")
    p.add_argument("--train-eval", type=int, default=300, help="training questions scored (fixed sample)")
    p.add_argument("--dense-aux", type=float, default=0.0,
                   help="weight of an oracle dense loss: D_4DP predicts the world's exact depth / flow / moving "
                        "mask under each visual token (an upper bound for P4D's teacher); 0 = SFT only")
    p.add_argument("--dense-layer", type=int, default=-1,
                   help="LLM hidden state D_4DP reads (decoder.hidden_layer: -1 last, k = output of block k)")
    p.add_argument("--objective", choices=["sft", "options", "both"], default="sft",
                   help="sft: the option text's token cross-entropy; options: a cross-entropy over the options' "
                        "log-likelihoods (what option scoring picks from); both: their sum (option style only)")
    p.add_argument("--pretrain-tower", type=int, default=0,
                   help="pretrain the vision tower for this many steps on the world's per-pixel ground truth of the "
                        "training videos (scripts/tower_pretrain.py), then freeze it; 0 = off")
    p.add_argument("--eval-every", type=int, default=0,
                   help="score the first --eval-sample held-out questions every this many steps (a learning curve)")
    p.add_argument("--eval-sample", type=int, default=500)
    p.add_argument("--hint-steps", type=int, default=0,
                   help="answer-hint curriculum: during the first N steps a training question carries "
                        "'(The answer is: <answer>.)' with probability 1 - step/N, so that the option-to-letter "
                        "mapping is learned before perception must supply the answer; 0 = off; never at scoring")
    p.add_argument("--prompt-lm", type=float, default=0.0,
                   help="weight of an auxiliary next-token loss on the prompt's text (question, options); the "
                        "answer loss keeps its own mean; 0 = answer tokens only")
    p.add_argument("--no-region-boxes", action="store_true",
                   help="turn the tiny preset's region-box embedding off (StudentConfig.region_boxes)")
    p.add_argument("--tower-width", type=int, default=0, help="vision tower width (0 = the tiny preset's 32)")
    p.add_argument("--tower-layers", type=int, default=0,
                   help="vision tower blocks (0 = the tiny preset's 2; features from the second-to-last)")
    p.add_argument("--derived", choices=["", "moves", "moves-static-camera"], default="",
                   help="train and score derived questions instead of the world's (scripts/motion_questions.py; "
                        "moves-static-camera: only scenes whose camera stands still)")
    p.add_argument("--llm-init-std", type=float, default=0.0,
                   help="std of the LM's weight init (0 = the tiny preset's LLMConfig.initializer_range)")
    p.add_argument("--region-aux", type=float, default=0.0,
                   help="weight of the region-level oracle loss at each question's first <obj_k> token "
                        "(scripts/region_aux.py); 0 = off")
    p.add_argument("--tpe", choices=["", "pre_projector", "post_projector", "off"], default="",
                   help="where TPE adds the frames' time codes (default: the tiny preset's pre_projector)")
    p.add_argument("--visual-positions", action="store_true",
                   help="the region-box embedding of each visual token's cell added to it (visual_positions)")
    p.add_argument("--region-tracks", action="store_true",
                   help="each region reference gets a read-out of the video around its box (region_tracks; the "
                        "tiny preset has it since the ninth round, the probe keeps it off unless asked)")
    p.add_argument("--no-answer-query", action="store_true",
                   help="region tracks at the region tokens only (RegionTrackConfig.answer_query off)")
    p.add_argument("--query-span", choices=QUERY_SPANS, default=RegionTrackConfig().query_span,
                   help="where the answer query is added: the position predicting the answer's first token, or "
                        "that position and every answer token (RegionTrackConfig.query_span)")
    p.add_argument("--motion-pairs", action="store_true",
                   help="region tracks also code consecutive frame pairs (RegionTrackConfig.motion_pairs)")
    p.add_argument("--first-tasks", default="SR", help="categories of the first --first-steps steps (curriculum)")
    p.add_argument("--first-steps", type=int, default=0, help="steps on --first-tasks only before all tasks")
    p.add_argument("--first-derived", choices=["", "moves", "moves-static-camera"], default="",
                   help="curriculum: the first --first-steps steps train on these derived 'does <obj_k> change its "
                        "position' questions (scripts/motion_questions.py) instead of --first-tasks")
    p.add_argument("--train-limit", type=int, default=0,
                   help="keep only this many training questions (a fixed seeded sample; 0 = all): the 'can it fit a "
                        "small set' check")
    p.add_argument("--tasks", default="", help="comma-separated categories to train and score (default: all)")
    p.add_argument("--out", default="", help="write the result JSON here")
    return p.parse_args(argv)


class Probe:
    """One student, its tokenizer and the world's frames; :meth:`loss` trains, :meth:`predict` answers."""

    def __init__(self, args: argparse.Namespace, world: World) -> None:
        self.args, self.world, self.tok = args, world, tiny_tokenizer()
        self.style = args.answer_style
        self.dense: torch.Tensor | None = None
        self.dense_losses: list[float] = []  # oracle dense loss per step (standardised targets: 1.0 = the mean)
        spec, oracle = None, None
        # tokens per side after the projector's k x k merge (a 64-px frame: 8x8 patches padded to 9x9 -> 3)
        merge = 3 if "3x3" in args.projector else 2
        grid = -(-(args.size // args.patch) // merge)
        if args.dense_aux > 0 or args.region_aux > 0:
            videos = sorted(world.index, key=world.index.__getitem__)
            oracle = torch.from_numpy(dense_targets(args.world, videos, world, grid))
        if args.dense_aux > 0:
            self.dense, spec = oracle, dense_spec(args.frames, grid, args.size)
        self.model = Student(probe_config(args), spec)
        self.region_aux: RegionAux | None = None
        if oracle is not None and args.region_aux > 0:
            self.region_aux = RegionAux(self.model, oracle, world.index, args.size, args.patch, merge, self.tok)

    def user_text(self, q: VQAItem, with_video: bool | None = None) -> str:
        """The R4D prompt; the SoM image and the video are in it unless ``--blind`` (``with_video`` overrides)."""
        media = not self.args.blind
        video = media if with_video is None else with_video
        return r4d_user_text(self.tok, q.question, q.options, q.duration_s, with_som_image=media, with_video=video,
                             include_duration=False, answer_style=self.style)  # fmt: skip

    def prompt(self, q: VQAItem) -> list[int]:
        return build_inference_ids(self.tok, self.user_text(q))

    def token_boxes(self, ids: Sequence[Sequence[int]], qs: Sequence[VQAItem]) -> list[torch.Tensor] | None:
        """Per-token region boxes for ``Student.forward`` when the student embeds them, else ``None``."""
        if not self.model.cfg.region_boxes:
            return None
        return [token_region_boxes(self.tok, i, q.regions) for i, q in zip(ids, qs, strict=True)]

    def media(self, qs: Sequence[VQAItem]) -> dict[str, torch.Tensor]:
        if self.args.blind:
            return {}
        idx = [self.world.index[q.video] for q in qs]
        frames = self.world.frames[idx]
        marked = np.stack([draw_set_of_marks(f[0], q.regions) for f, q in zip(frames, qs, strict=True)])
        return media_tensors(self.world, idx, frames, marked, self.args.size)

    def option_loss(self, qs: Sequence[VQAItem], media: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over each question's option log-likelihoods (the correct option as the class)."""
        prompts = [torch.tensor(self.prompt(q)) for q in qs]
        conts = [[torch.tensor(self.tok.encode(o) + [self.tok.im_end_id]) for o in q.options] for q in qs]
        scores = option_scores(self.model, prompts, conts, media.get("videos"), media.get("timestamps_s"),
                               media.get("images"), max_sequences=64,
                               token_boxes=self.token_boxes([p.tolist() for p in prompts], qs))  # fmt: skip
        losses = [F.cross_entropy(s[None], torch.tensor([q.options.index(q.answer)])) for s, q in zip(scores, qs, strict=True)]
        return torch.stack(losses).mean()

    def loss(self, qs: Sequence[VQAItem]) -> torch.Tensor:
        if self.args.objective == "options":
            return self.option_loss(qs, self.media(qs))
        examples = [build_training_example(self.tok, self.user_text(q), mcq_target(q.options, q.answer, self.style))
                    for q in qs]  # fmt: skip
        media = self.media(qs)
        owner = {"image_owner": torch.arange(len(qs))} if "images" in media else {}
        labels = [torch.tensor(e.labels) for e in examples]
        if self.args.prompt_lm > 0:  # supervise every text token; the answer's are the last ones of each sample
            media_ids = torch.tensor([self.model.cfg.tokens.image_token_id, self.model.cfg.tokens.video_token_id])
            labels = [torch.where(torch.isin(torch.tensor(e.input_ids), media_ids), -100, torch.tensor(e.input_ids))
                      for e in examples]  # fmt: skip
        out = self.model([torch.tensor(e.input_ids) for e in examples], labels,
                         **media, **owner, token_boxes=self.token_boxes([e.input_ids for e in examples], qs), compute_latents=self.dense is not None, supervised_logits_only=True)  # fmt: skip
        if self.args.prompt_lm > 0:
            answers = torch.tensor([sum(x != -100 for x in e.labels[1:]) for e in examples])
            loss = answer_and_prompt_loss(out.logits, out.labels, answers, self.args.prompt_lm)
        else:
            loss = sft_loss(out.logits, out.labels)[0]
        if self.args.objective == "both":
            loss = loss + self.option_loss(qs, media)
        if self.region_aux is not None:
            loss = loss + self.args.region_aux * self.region_aux.loss(qs, [e.input_ids for e in examples], out.attention_mask)
        if self.dense is not None and out.latents is not None:
            target = self.dense[[self.world.index[q.video] for q in qs]].unsqueeze(1)  # [B, 1, T, g, g, C]
            dense = latent_loss(out.latents, target, "mse", 1.0).mean()
            self.dense_losses.append(float(dense.detach()))
            loss = loss + self.args.dense_aux * dense
        return loss

    @torch.no_grad()
    def predict(self, qs: Sequence[VQAItem], chunk: int = 16) -> list[int]:
        self.model.eval()
        preds: list[int] = []
        letters = [self.tok.encode(x)[0] for x in OPTION_LETTERS]
        for i in range(0, len(qs), chunk):
            part = qs[i : i + chunk]
            media = self.media(part)
            prompts = [torch.tensor(self.prompt(q)) for q in part]
            if self.style == "option":
                conts = [[torch.tensor(self.tok.encode(o) + [self.tok.im_end_id]) for o in q.options] for q in part]
                scores = option_log_likelihoods(self.model, prompts, conts, media.get("videos"),
                                                media.get("timestamps_s"), media.get("images"),
                                                token_boxes=self.token_boxes([p.tolist() for p in prompts], part))  # fmt: skip
                preds += [choose_option(s) for s in scores]
            else:  # the letter whose logit is highest after the prompt, among the item's letters
                owner = {"image_owner": torch.arange(len(part))} if "images" in media else {}
                boxes = self.token_boxes([p.tolist() for p in prompts], part)
                out = self.model(prompts, **media, **owner, token_boxes=boxes, compute_latents=False)
                last = out.attention_mask.sum(1) - 1
                logits = out.logits[torch.arange(len(part)), last][:, letters]
                preds += [int(row[: len(q.options)].argmax()) for q, row in zip(part, logits, strict=True)]
        self.model.train()
        return preds


def answer_and_prompt_loss(logits: torch.Tensor, labels: torch.Tensor, answers: torch.Tensor, weight: float) -> torch.Tensor:
    """Mean CE of each sample's last ``answers[b]`` supervised tokens plus ``weight`` x the mean CE of the others.

    ``logits`` [B, M + 1, V], ``labels`` [B, M + 1] in ``compact_supervised``'s convention (slot ``j`` predicts
    ``labels[:, j + 1]``, supervised targets in order, then padding)."""
    target = labels[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=-100,
                         reduction="none").view(target.shape)  # fmt: skip
    supervised = target != -100
    count = supervised.sum(1, keepdim=True)
    slot = torch.arange(target.shape[1])[None]
    is_answer = supervised & (slot >= count - answers[:, None])
    is_prompt = supervised & ~is_answer
    return ce[is_answer].mean() + weight * (ce[is_prompt].mean() if bool(is_prompt.any()) else ce.sum() * 0)


def probe_config(args: argparse.Namespace) -> StudentConfig:
    cfg = tiny()
    width, layers = args.tower_width or cfg.vision.hidden_size, args.tower_layers or cfg.vision.num_layers
    vision = dataclasses.replace(cfg.vision, hidden_size=width, intermediate_size=2 * width, num_layers=layers,
                                 num_heads=max(2, width // 32), image_size=args.size, patch_size=args.patch, frozen=not args.train_vision)
    llm = dataclasses.replace(cfg.llm, num_layers=args.llm_layers or cfg.llm.num_layers,
                              initializer_range=args.llm_init_std or cfg.llm.initializer_range)
    decoder = dataclasses.replace(cfg.decoder, hidden_layer=args.dense_layer)
    return dataclasses.replace(cfg, vision=vision, llm=llm, projector=ProjectorConfig(args.projector),
                               answer_style=args.answer_style, decoder=decoder, visual_positions=args.visual_positions,
                               region_boxes=cfg.region_boxes and not args.no_region_boxes,
                               region_tracks=RegionTrackConfig(enabled=args.region_tracks and not args.no_region_boxes,
                                                              answer_query=not args.no_answer_query,
                                                              query_span=args.query_span,
                                                              motion_pairs=args.motion_pairs),
                               tpe=TPEConfig(placement=args.tpe, base=cfg.tpe.base) if args.tpe else cfg.tpe)  # fmt: skip


def accuracy(qs: Sequence[VQAItem], preds: Sequence[int]) -> tuple[float, dict[str, float]]:
    """(Avg over all questions as in R4D-Bench, per-category accuracy), percent."""
    per: dict[str, list[bool]] = defaultdict(list)
    for q, p in zip(qs, preds, strict=True):
        per[q.task].append(p == q.options.index(q.answer))
    cats = {t: round(100 * float(np.mean(v)), 1) for t, v in sorted(per.items())}
    return round(100 * float(np.mean([x for v in per.values() for x in v])), 1), cats


def accuracy_by_answer(qs: Sequence[VQAItem], preds: Sequence[int], min_count: int = 20) -> dict[str, float]:
    """Accuracy (percent) per category and answer text (``<obj_k>`` dropped), for answers given >= ``min_count``
    times: a student that learned only the prior class scores 100 on it and 0 on every other."""
    per: dict[str, list[bool]] = defaultdict(list)
    for q, p in zip(qs, preds, strict=True):
        answer = re.sub(r"\s*<obj_\d+>", "", q.answer) if q.task in CLASS_TASKS else ""
        if answer:
            per[f"{q.task}: {answer}"].append(p == q.options.index(q.answer))
    return {k: round(100 * float(np.mean(v)), 1) for k, v in sorted(per.items()) if len(v) >= min_count}


def training_batch(args: argparse.Namespace, train: list[VQAItem], first: list[VQAItem], step: int) -> list[VQAItem]:
    """Step ``step``'s questions: drawn from ``first`` (``--first-tasks``) for ``--first-steps`` steps, then from
    all of ``train`` (seeded per step); with ``--hint-steps``, the answer stated in the question at probability
    1 - step/N."""
    pool = first if step < args.first_steps else train
    batch = [pool[i] for i in np.random.default_rng([args.seed, step]).integers(0, len(pool), args.batch)]
    if args.hint_steps and step < args.hint_steps:
        hint = np.random.default_rng([args.seed, step, 1]).random(len(batch)) < 1 - step / args.hint_steps
        batch = [dataclasses.replace(q, question=f"{q.question} (The answer is: {q.answer}.)") if h else q
                 for q, h in zip(batch, hint, strict=True)]  # fmt: skip
    return batch


def main(argv: Sequence[str] | None = None, probe_cls: type[Probe] = Probe) -> dict[str, Any]:
    """Train and score; ``probe_cls`` lets a variant change what the student sees (scripts/visual_probe.py)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = load_questions(args.world, "train")
    held = load_questions(args.world, "val") + load_questions(args.world, "test")
    if args.derived:  # per-object "does it change its position" questions instead of the world's
        static = args.derived == "moves-static-camera"
        train = motion_questions(args.world, ["train"], 0, static)
        held = motion_questions(args.world, ["val", "test"], 1, static)
    if args.tasks:
        keep = set(args.tasks.split(","))
        train, held = [q for q in train if q.task in keep], [q for q in held if q.task in keep]
    if args.train_limit:
        train = [train[i] for i in sorted(np.random.default_rng(7).permutation(len(train))[: args.train_limit])]
    print(f"[1/3] world {args.world}: {len(train)} training / {len(held)} held-out questions", flush=True)
    first = [q for q in train if q.task in set(args.first_tasks.split(","))] if args.first_steps else train
    if args.first_steps and args.first_derived:
        first = motion_questions(args.world, ["train"], 0, args.first_derived == "moves-static-camera")
    world = decode_world(args.world, sorted({q.video for q in train + held + first}), args.size, args.frames)
    probe = probe_cls(args, world)
    tower_log: list[float] = []
    if args.pretrain_tower:
        videos = sorted(world.index, key=world.index.__getitem__)
        targets = tower_targets(args.world, videos, world.timestamps_s, args.size, args.patch)
        rows = np.array(sorted({world.index[q.video] for q in train}))
        print(f"[1b] pretraining the vision tower {args.pretrain_tower} steps on {len(rows)} training videos", flush=True)
        tower_log = pretrain_tower(probe.model.vision, world.frames, targets, rows, args.pretrain_tower, args.seed)
        probe.model.vision.requires_grad_(False)
        probe.model.vision.cfg = dataclasses.replace(probe.model.vision.cfg, frozen=True)
    params = [p for p in probe.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, args.beta2), weight_decay=0.01)
    warm = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, linear decay to 5 %
        optimizer, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - max(0, s - warm) / max(1, args.steps - warm)))
    print(f"[2/3] training {args.steps} steps x {args.batch} ({sum(p.numel() for p in params):,} trained parameters)",
          flush=True)  # fmt: skip
    held_sample = [held[i] for i in np.random.default_rng(123).permutation(len(held))[: args.held_out]]
    curve: list[tuple[int, float]] = []  # (step, held-out Avg on the first --eval-sample questions)
    start, recent = time.perf_counter(), list[float]()
    for step in range(args.steps):
        loss = probe.loss(training_batch(args, train, first, step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        recent = [*recent[-49:], float(loss.detach())]
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            rate = args.batch * (step + 1) / (time.perf_counter() - start)
            dense = f"  dense {np.mean(probe.dense_losses[-50:]):.3f}" if probe.dense_losses else ""
            if probe.region_aux is not None:
                dense += f"  region {np.mean(probe.region_aux.losses[-50:]):.3f}"
            print(f"  step {step + 1}/{args.steps}  loss {np.mean(recent):.3f}{dense}  {rate:.1f} samples/s  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        if args.eval_every and (step + 1) % args.eval_every == 0:
            part = held_sample[: args.eval_sample]
            curve.append((step + 1, accuracy(part, probe.predict(part))[0]))
            print(f"  step {step + 1}: held-out Avg {curve[-1][1]} on {len(part)} questions", flush=True)
    train_s = time.perf_counter() - start
    train_sample = [train[i] for i in np.random.default_rng(321).permutation(len(train))[: args.train_eval]]
    print(f"[3/3] scoring {len(held_sample)} held-out and {len(train_sample)} training questions", flush=True)
    held_preds = probe.predict(held_sample)
    held_avg, held_cats = accuracy(held_sample, held_preds)
    train_avg, train_cats = accuracy(train_sample, probe.predict(train_sample))
    result = {"args": vars(args), "held_out_avg": held_avg, "held_out": held_cats, "train_avg": train_avg,
              "train": train_cats,
              "held_out_by_answer": accuracy_by_answer(held_sample, held_preds), "train_s": round(train_s), "samples_per_s": round(args.steps * args.batch / train_s, 1),
              "final_loss": round(float(np.mean(recent)), 3),
              "final_dense_loss": round(float(np.mean(probe.dense_losses[-50:])), 3) if probe.dense_losses else None, "load_avg_1min": round(os.getloadavg()[0], 2),
              "final_region_loss": round(float(np.mean(probe.region_aux.losses[-50:])), 3) if probe.region_aux else None,
              "n_held_out": len(held_sample), "tower_pretrain_loss": tower_log,
              "held_out_curve": curve,
              "held_out_predictions": {q.id: p for q, p in zip(held_sample, held_preds, strict=True)}}  # fmt: skip
    print(json.dumps(result), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
