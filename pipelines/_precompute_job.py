"""The precompute job's configuration and result (private to ``pipelines/precompute.py``, which re-exports them):
:class:`InputConfig`, :class:`ComputeConfig`, :class:`OutputConfig`, :class:`PrecomputeJob` and :class:`Summary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines._ray import RayTarget
from rgpt4d_core import storage
from rgpt4d_core.experts.config import ExpertConfig
from rgpt4d_core.shards import precompute as P


@dataclass(frozen=True)
class InputConfig:
    """Where the samples come from.

    Attributes:
        dataset_root: a synthetic-world style root: ``<root>/questions/<split>.jsonl``, videos relative to root.
        splits: splits read from ``dataset_root``.
        qa_manifest: an R4D-format JSONL file (local or s3://), alternative to ``dataset_root``.
        video_list: a text file with one video URI per line (samples without a question).
        video_root: base of relative video paths (default: ``dataset_root``, else the manifest's folder).
        limit: keep only the first N records (0 = all).
    """

    dataset_root: str | None = None
    splits: list[str] = field(default_factory=lambda: ["train"])
    qa_manifest: str | None = None
    video_list: str | None = None
    video_root: str | None = None
    limit: int = 0


@dataclass(frozen=True)
class ComputeConfig:
    """Ray resources and how the stages are laid out on them.

    Two layouts (``fuse_stages``):

    * fused (the default, for CPU-only machines and any node where CPUs are scarce): each expert actor takes one
      part (``output.clips_per_file`` videos), decodes it, runs the expert ``batch_size`` clips at a time, encodes
      the rows and writes the part. No decode or write tasks compete with the actors for the cores, and no frames
      or targets cross the object store. On CPUs: one actor per core with ``torch_threads`` 1 (the shape
      ``bench/precompute.py`` sets against a plain loop).
    * split (``fuse_stages: false``, GPU nodes): decode CPU tasks (``num_cpus_per_task`` each,
      ``decode_batch_size`` videos) -> expert actors (``batch_size`` clips per call) -> encode + write CPU tasks,
      so that decoding fans out over the node's CPUs while the GPU runs only the expert (``docs/cluster.md``
      sizes the decode CPUs per GPU actor).

    Attributes:
        num_actors: expert actor-pool size.
        batch_size: clips per expert call.
        num_gpus_per_actor: GPUs per expert actor (0 on CPU).
        num_cpus_per_actor: logical CPUs per expert actor.
        num_cpus_per_task: logical CPUs per decode / encode task (split layout).
        torch_threads: intra-op threads of torch and OpenCV inside each expert actor (0 = the libraries' defaults).
        fuse_stages: the fused layout (see above) instead of the split one.
        decode_batch_size: videos per decode task (split layout).
        decode_memory_mb: memory each decode task reserves (split layout; also keeps Ray from fusing decode into
            the expert actors, so decoding overlaps the expert instead of running inside it).
    """

    num_actors: int = 1
    batch_size: int = 2
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 0.5
    num_cpus_per_task: float = 0.5
    torch_threads: int = 1
    fuse_stages: bool = True
    decode_batch_size: int = 1
    decode_memory_mb: int = 512


@dataclass(frozen=True)
class OutputConfig:
    """Where and how shards are written.

    Attributes:
        uri: shard root (local path or ``s3://bucket/prefix``).
        row_group_bytes: target bytes per row group of the clip table (clips per group = this / estimated clip
            bytes); the training reader reads and caches a row group at a time.
        clips_per_file: videos per part, i.e. clip rows per clip file (the part's question file holds all
            questions about them); one write task per part.
    """

    uri: str = "out/shards/tiny"
    row_group_bytes: int = 64 << 20
    clips_per_file: int = 16


@dataclass(frozen=True)
class PrecomputeJob:
    """The precompute job's config (``conf/precompute/*.yaml`` are deltas over these defaults).

    Attributes:
        plugins: modules imported on the driver and in every expert actor before the expert is built
            (they may ``register_expert`` custom experts).
        ray_address: ``None``: start a local Ray (or attach when ``RAY_ADDRESS`` is set, as under ``ray job
            submit``); else the address to attach to.
        num_cpus: logical CPUs of a locally started Ray.
        forward_env: environment variables copied from the driver into the job's Ray tasks and actors when set
            (S3 endpoint/region by default). Workers of an already running cluster do not see the driver's
            environment; naming credentials here puts them into the job's runtime_env, which anyone with access
            to the cluster's dashboard can read, so prefer credentials configured on the nodes.
    """

    input: InputConfig = field(default_factory=InputConfig)
    sampling: P.SamplingConfig = field(default_factory=P.SamplingConfig)
    expert: ExpertConfig = field(
        default_factory=lambda: ExpertConfig(name="l4p", preset="l4p_tiny", device="cpu")
    )
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    plugins: list[str] = field(default_factory=list)
    ray_address: str | None = None
    num_cpus: int | None = None
    forward_env: list[str] = field(default_factory=lambda: list(storage.S3_ENV_VARS))

    def ray_target(self) -> RayTarget:
        return RayTarget(self.ray_address, self.num_cpus, tuple(self.forward_env))


@dataclass
class Summary:
    """What a run did (this run) and what the shard set holds (all runs).

    Timing: ``wall_s`` is the whole run; ``startup_s`` the time until the first part was written (expert spec
    task, actor construction, the first part's work); ``steady_clips_per_s`` the clip rows per second after the
    first round of parts (one per actor), 0 when the run wrote too few parts to tell.
    """

    output: str
    videos: int = 0
    records: int = 0
    skipped_written: int = 0
    skipped_duplicate: int = 0
    clips_written: int = 0
    clips_reused: int = 0
    written_ok: int = 0
    written_error: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    removed_partial_files: int = 0
    total_rows: int = 0
    total_clips: int = 0
    total_bytes: int = 0
    files: int = 0
    wall_s: float = 0.0
    startup_s: float = 0.0
    steady_clips_per_s: float = 0.0

    @property
    def clips_per_s(self) -> float:
        return self.videos / self.wall_s if self.wall_s > 0 else 0.0

    def text(self) -> str:
        lines = [
            f"precompute -> {self.output}",
            f"  this run : {self.videos} videos, {self.records} samples ({self.written_ok} ok, "
            f"{self.written_error} error), {self.clips_per_s:.2f} clips/s over {self.wall_s:.1f} s",
            f"  timing   : {self.startup_s:.1f} s to the first part (expert spec, actor start-up, first part), "
            f"then {self.steady_clips_per_s:.2f} clips/s (steady state)",
            f"  clips    : {self.clips_written} written, {self.clips_reused} already written (their missing "
            f"questions added)",
            f"  skipped  : {self.skipped_written} already written, {self.skipped_duplicate} duplicate inputs, "
            f"{self.removed_partial_files} partial files removed",
        ]
        for reason, n in sorted(self.errors_by_reason.items()):
            lines.append(f"  error    : {reason}: {n}")
        lines.append(
            f"  shard set: {self.total_rows} questions on {self.total_clips} clips in {self.files} files, "
            f"{self.total_bytes / 1e6:.2f} MB"
        )
        return "\n".join(lines)
