"""Configuration of the synthetic 4D world generator (one frozen dataclass, loaded with ``rgpt4d_core.config``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rgpt4d_core.config import OMIT_WHEN_EMPTY

#: bumped whenever scenes, rendering or questions change for the same seed
GENERATOR_VERSION = "1.3.0"  # 1.3.0: counting questions name their regions


@dataclass(frozen=True)
class SynthConfig:
    """What :func:`rgpt4d_core.synth.scenes.make_scene` and the question generator draw from.

    Attributes:
        seed: dataset seed; scene ``i`` depends only on ``(seed, i)`` and these fields.
        num_scenes: number of scenes (videos) in the dataset.
        width, height: frame size in pixels (even, for H.264 yuv420p).
        fps_choices: frame rates drawn per scene (even, so that every half second is a frame).
        min_duration_s, max_duration_s: duration range (drawn in 0.5 s steps).
        max_frames: hard cap on frames per video (keeps rendering time bounded).
        min_objects, max_objects: objects per scene.
        dynamic_prob: probability that an object moves (translates and/or rotates).
        moving_camera_prob: probability that the camera translates and yaws.
        min_speed, max_speed: initial speed range of translating objects (m/s).
        split_fractions: ``(train, val, test)`` fractions; a scene belongs to exactly one split.
        questions_per_category: at most this many questions per category per scene.
        balance_answers: keep, in each split, category and question kind, equally many questions per answer class
            (:mod:`rgpt4d_core.synth.balance`): no answer wins by prior. It drops the surplus of common classes
            (about half of all questions), so small worlds used only to exercise the code switch it off.
        depth_dtype: ``float32`` or ``float16`` for depth / flow in the ground-truth files.
        crf: H.264 constant rate factor of the videos; 0 (default) is lossless: the decoded frames are the rendered
            ones (after 4:2:0 chroma subsampling), so the same seed gives the same pixels. A lossy rate (e.g. 18,
            ≈ 4× smaller files, compression artefacts like real videos) does not: libx264's lossy bitstream varies
            with the process's heap state (``tests/test_synth_writer.py``), and with it everything trained on the
            world.
        tasks: which question categories to ask, by code; empty (the default) = R4D-Bench's nine. ``TB`` is the
            TimeBench-style time probe ("How much time has passed in the video?", paper Table A3), asked only when
            listed, e.g. ``[TB]`` for a world of time questions alone. Left out of the config's records while empty,
            so worlds written before the field existed keep their identity.
    """

    seed: int = 0
    num_scenes: int = 100
    width: int = 224
    height: int = 224
    fps_choices: tuple[int, ...] = (10, 12, 16, 20, 24, 30)
    min_duration_s: float = 2.0
    max_duration_s: float = 8.0
    max_frames: int = 240
    min_objects: int = 2
    max_objects: int = 8
    dynamic_prob: float = 0.6
    moving_camera_prob: float = 0.4
    min_speed: float = 0.3
    max_speed: float = 1.0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    questions_per_category: int = 1
    balance_answers: bool = True
    depth_dtype: str = "float32"
    crf: int = 0
    tasks: tuple[str, ...] = field(default=(), metadata={OMIT_WHEN_EMPTY: True})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the configuration cannot work."""
        if self.width % 2 or self.height % 2 or self.width < 16 or self.height < 16:
            raise ValueError(f"synth.width/height must be even and >= 16, got {self.width}x{self.height}")
        if any(f % 2 for f in self.fps_choices) or not self.fps_choices:
            raise ValueError(f"synth.fps_choices must be non-empty and even, got {self.fps_choices}")
        if not 0.5 <= self.min_duration_s <= self.max_duration_s:
            raise ValueError("synth.min_duration_s must be in [0.5, max_duration_s]")
        if not 1 <= self.min_objects <= self.max_objects <= 10:
            raise ValueError("synth.min_objects/max_objects must satisfy 1 <= min <= max <= 10")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValueError(f"synth.split_fractions must be 3 numbers summing to 1, got {self.split_fractions}")
        if self.depth_dtype not in ("float32", "float16"):
            raise ValueError(f"synth.depth_dtype must be float32 or float16, got {self.depth_dtype}")
        if self.max_frames < 4:
            raise ValueError("synth.max_frames must be >= 4")
        from rgpt4d_core.synth.questions import QUESTION_TASKS

        unknown = [t for t in self.tasks if t not in QUESTION_TASKS]
        if unknown or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"synth.tasks must be distinct codes of {', '.join(QUESTION_TASKS)}; got {list(self.tasks)}")
