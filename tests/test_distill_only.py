"""Distillation-only rows (``data.distill_only_per_micro_batch``): which clips, which rows each micro-batch takes,
how they are collated (no answer, no SFT), and that the SFT term does not see them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from rgpt4d_core.config import to_yaml
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.reader import open_shards
from rgpt4d_core.text.prompts import IGNORE_INDEX
from rgpt4d_core.train.distill import build_setup
from rgpt4d_core.train.distill_only import DistillOnlySchedule, one_row_per_clip
from tests.distill_testkit import tiny_job as _cfg
from tests.distill_testkit import write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_shards(tmp_path_factory.mktemp("shards"), num_samples=4, files=1))


def test_one_row_per_clip_keeps_each_clips_first_row_in_table_order() -> None:
    table = pa.table({S.CLIP_ID: ["b", "b", "a", "c", "a", "b"], "n": [0, 1, 2, 3, 4, 5]})
    assert one_row_per_clip(table).column("n").to_pylist() == [0, 2, 3]


def _slots(schedule: DistillOnlySchedule, steps: int) -> list[int]:
    """Every row the run takes, in slot order (step, micro-batch, rank)."""
    return [int(i) for step in range(steps) for micro in range(schedule.accumulation)
            for rank in range(schedule.world) for i in schedule.indices(step, micro, rank)]  # fmt: skip


def test_schedule_visits_every_row_once_per_cycle_in_a_new_seeded_order() -> None:
    schedule = DistillOnlySchedule(rows=7, per_micro_batch=3, accumulation=2, world=2, seed=5)
    taken = _slots(schedule, steps=7)  # 7 steps x 2 micro-batches x 2 ranks x 3 rows = 84 slots = 12 cycles of 7
    cycles = [taken[i : i + 7] for i in range(0, len(taken), 7)]
    assert all(sorted(c) == list(range(7)) for c in cycles)
    assert len({tuple(c) for c in cycles}) > 1  # each cycle shuffled anew
    assert taken == _slots(DistillOnlySchedule(7, 3, 2, 2, seed=5), steps=7)  # a function of its arguments only
    assert taken != _slots(DistillOnlySchedule(7, 3, 2, 2, seed=6), steps=7)
    # a resumed run asks for step 4 without having asked for steps 0-3: the same rows
    assert list(DistillOnlySchedule(7, 3, 2, 2, seed=5).indices(4, 1, 1)) == taken[(4 * 4 + 1 * 2 + 1) * 3 :][:3]
    with pytest.raises(ValueError, match="positive sizes"):
        DistillOnlySchedule(rows=0, per_micro_batch=1, accumulation=1, world=1, seed=0)


def test_config_refuses_distill_only_rows_without_a_distillation_term_and_omits_the_default(shards: str) -> None:
    with pytest.raises(ValueError, match="only the distillation terms use"):
        _cfg(shards, "ablation.variant=sft_only", "data.distill_only_per_micro_batch=2").validate()
    _cfg(shards, "ablation.variant=sft_only", "losses.region=1", "data.distill_only_per_micro_batch=2").validate()
    with pytest.raises(ValueError, match=">= 0"):
        _cfg(shards, "data.distill_only_per_micro_batch=-1").validate()
    assert "distill_only_per_micro_batch" not in to_yaml(_cfg(shards))  # earlier runs keep their reuse keys
    assert "distill_only_per_micro_batch: 2" in to_yaml(_cfg(shards, "data.distill_only_per_micro_batch=2"))


def test_distill_only_rows_are_collated_without_answer_and_add_nothing_to_sft(shards: str) -> None:
    torch.set_num_threads(1)
    s = open_shards(shards)
    cfg = _cfg(shards, "losses.preset=released_code")
    setup = build_setup(cfg, s.manifest.expert_spec, torch.device("cpu"))
    labelled, extra = s.iter_batches(2)  # four questions about four clips
    alone = setup.prepare(labelled, torch.device("cpu"))
    joined = setup.prepare(labelled, torch.device("cpu"), distill_only=extra)

    assert len(joined) == 4 and joined.videos.shape[0] == 4 and torch.equal(joined.videos[:2], alone.videos)
    assert joined.image_owner is not None and joined.image_owner.tolist() == [0, 1, 2, 3]
    for name, target in alone.targets.items():
        assert joined.targets[name].shape[0] == 4 and torch.equal(joined.targets[name][:2], target)
    for i in range(2):
        assert torch.equal(joined.input_ids[i], alone.input_ids[i]) and torch.equal(joined.labels[i], alone.labels[i])
    supervised_extra = setup.prepare(extra, torch.device("cpu"))
    for i in (2, 3):  # the inference prompt: the supervised sample's ids before its answer, nothing supervised
        ids, labels, full = joined.input_ids[i], joined.labels[i], supervised_extra.input_ids[i - 2]
        assert bool((labels == IGNORE_INDEX).all()) and len(ids) < len(full) and torch.equal(full[: len(ids)], ids)

    setup.student.eval()
    with torch.no_grad():
        one, two = setup.loss(setup.student, alone), setup.loss(setup.student, joined)
    assert float(two.terms["sft"]) == pytest.approx(float(one.terms["sft"]), rel=1e-5, abs=1e-6)
    assert float(two.terms["ld"]) != pytest.approx(float(one.terms["ld"]), rel=1e-4)  # distils on four samples
    assert two.num_samples == 4 and two.num_tokens > one.num_tokens


def test_driver_table_has_one_row_per_clip_beyond_max_samples(tmp_path: Path) -> None:
    from pipelines.distill import distill_only_questions, training_questions, usable_questions

    root = str(write_shards(tmp_path / "s", num_samples=6, files=2, questions_per_clip=2))
    cfg = _cfg(root, "data.max_samples=2", "data.distill_only_per_micro_batch=1")
    usable = usable_questions(cfg, open_shards(root))
    labelled = training_questions(cfg, usable)
    table = distill_only_questions(cfg, usable)
    assert table is not None and labelled.num_rows == 2
    assert len(set(labelled.column(S.CLIP_ID).to_pylist())) == 1  # the first 2 questions are about one clip
    clips = table.column(S.CLIP_ID).to_pylist()
    assert len(clips) == len(set(clips)) == 3  # every clip of the split, once
    assert distill_only_questions(_cfg(root, "data.max_samples=2"), usable) is None
    assert np.all(np.isin(labelled.column(S.CLIP_ID).to_numpy(zero_copy_only=False), np.array(clips)))
