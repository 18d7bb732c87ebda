"""Seeded procedural 3D scenes (metres, seconds) and their exact motion.

World frame (right-handed, metres): ``x`` right, ``y`` forward, ``z`` up; the ground is the plane ``z = 0``; the
origin lies on the ground directly below the camera at time 0, whose heading is ``+y``. Questions that speak of
3D positions use this frame ("the ground frame of the first camera").

Camera frame (OpenCV): ``x`` right, ``y`` down, ``z`` forward. ``cam_to_world`` maps camera to world coordinates.
Yaw angles are about world ``+z`` (counter-clockwise seen from above is positive).

Every object rests on the ground and moves with a piecewise motion: static until ``start_s``, then constant
acceleration ``acc`` from velocity ``vel`` (both horizontal, m/s and m/s²), and yaw rate ``yaw_rate`` (rad/s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rgpt4d_core.synth.config import SynthConfig

KINDS: tuple[str, ...] = ("box", "sphere", "cylinder")
#: named base colours (linear RGB in [0, 1]); names appear in region labels
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.12),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.95, 0.85, 0.15),
    "orange": (0.95, 0.5, 0.1),
    "purple": (0.55, 0.2, 0.75),
    "white": (0.92, 0.92, 0.92),
    "cyan": (0.1, 0.8, 0.85),
    "pink": (0.95, 0.45, 0.7),
    "black": (0.12, 0.12, 0.12),
}
TEXTURES: tuple[str, ...] = ("plain", "stripes", "checker", "rings")


@dataclass(frozen=True)
class SceneObject:
    """One rigid object resting on the ground.

    Attributes:
        kind: ``box`` | ``sphere`` | ``cylinder``.
        size: ``(sx, sy, sz)`` metres along the object's local x, y, z (sphere: all ``2r``; cylinder: ``(2r, 2r, h)``).
        colour: a key of :data:`COLOURS`.
        texture: a key of :data:`TEXTURES`; ``texture_scale`` is its period in metres.
        pos0: ``(x, y)`` ground position of the centre at time 0 (metres, world frame).
        yaw0: yaw at time 0 (rad).
        vel, acc: horizontal velocity (m/s) and acceleration (m/s²) once moving.
        yaw_rate: rad/s once moving (positive = counter-clockwise seen from above).
        start_s: time the motion starts (s); before it the object is at rest.
    """

    kind: str
    size: tuple[float, float, float]
    colour: str
    texture: str
    texture_scale: float
    pos0: tuple[float, float]
    yaw0: float
    vel: tuple[float, float] = (0.0, 0.0)
    acc: tuple[float, float] = (0.0, 0.0)
    yaw_rate: float = 0.0
    start_s: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.colour} {self.kind}"

    @property
    def translates(self) -> bool:
        return bool(np.any(np.asarray(self.vel) != 0) or np.any(np.asarray(self.acc) != 0))

    @property
    def rotates(self) -> bool:
        return self.yaw_rate != 0.0

    @property
    def moves(self) -> bool:
        return self.translates or self.rotates

    def pose(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World pose at times ``t`` (float64 ``[T]`` s): centres float64 ``[T, 3]`` m and yaws float64 ``[T]`` rad."""
        t = np.asarray(t, dtype=np.float64)
        tau = np.clip(t - self.start_s, 0.0, None)
        vel, acc = np.asarray(self.vel), np.asarray(self.acc)
        xy = np.asarray(self.pos0)[None, :] + tau[:, None] * vel[None, :] + 0.5 * tau[:, None] ** 2 * acc[None, :]
        z = np.full((t.shape[0], 1), self.size[2] / 2.0)
        return np.concatenate([xy, z], axis=1), self.yaw0 + self.yaw_rate * tau


@dataclass(frozen=True)
class Camera:
    """Pinhole camera at height ``height`` m, pitched down by ``pitch`` rad, translating and yawing linearly.

    Attributes:
        width, height_px: image size in pixels.
        fov_deg: horizontal field of view.
        height: camera centre height above the ground (m).
        pitch: downward tilt (rad, positive looks down).
        vel: ``(vx, vy)`` horizontal velocity (m/s); ``yaw_rate`` rad/s.
    """

    width: int
    height_px: int
    fov_deg: float
    height: float
    pitch: float
    vel: tuple[float, float] = (0.0, 0.0)
    yaw_rate: float = 0.0

    @property
    def moves(self) -> bool:
        return self.yaw_rate != 0.0 or any(v != 0.0 for v in self.vel)

    def intrinsics(self) -> np.ndarray:
        """float64 ``[3, 3]`` K (pixels); pixel ``(u, v)`` = column, row of the pixel *centre*."""
        f = (self.width / 2.0) / np.tan(np.deg2rad(self.fov_deg) / 2.0)
        return np.array([[f, 0.0, (self.width - 1) / 2.0], [0.0, f, (self.height_px - 1) / 2.0], [0.0, 0.0, 1.0]])

    def cam_to_world(self, t: np.ndarray) -> np.ndarray:
        """float64 ``[T, 4, 4]`` camera-to-world transforms at times ``t`` (s)."""
        t = np.asarray(t, dtype=np.float64)
        yaw = self.yaw_rate * t
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(self.pitch), np.sin(self.pitch)
        right = np.stack([cy, sy, np.zeros_like(t)], axis=-1)
        fwd_h = np.stack([-sy, cy, np.zeros_like(t)], axis=-1)
        up = np.array([0.0, 0.0, 1.0])
        forward = cp * fwd_h - sp * up
        cam_up = sp * fwd_h + cp * up
        out = np.zeros((t.shape[0], 4, 4))
        out[:, :3, 0], out[:, :3, 1], out[:, :3, 2] = right, -cam_up, forward
        out[:, 0, 3] = self.vel[0] * t
        out[:, 1, 3] = self.vel[1] * t
        out[:, 2, 3] = self.height
        out[:, 3, 3] = 1.0
        return out


@dataclass(frozen=True)
class Scene:
    """A seeded scene: objects, camera and timing. ``timestamps_s[i] = i / fps``."""

    scene_id: str
    index: int
    seed: int
    fps: float
    num_frames: int
    camera: Camera
    objects: tuple[SceneObject, ...] = field(default_factory=tuple)
    ground_texture_scale: float = 1.0
    backdrop_y: float = 14.0

    @property
    def timestamps_s(self) -> np.ndarray:
        return np.arange(self.num_frames, dtype=np.float64) / self.fps

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def scene_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Independent deterministic generator per (dataset seed, scene index, purpose)."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


def scene_id_for(index: int) -> str:
    return f"s{index:06d}"


def _footprint_radius(size: tuple[float, float, float]) -> float:
    return float(np.hypot(size[0], size[1]) / 2.0)


def _sample_object(
    rng: np.random.Generator, cfg: SynthConfig, label_taken: set[str], dynamic: bool, duration_s: float
) -> SceneObject:
    kind = KINDS[int(rng.integers(len(KINDS)))]
    colour_names = [c for c in COLOURS if f"{c} {kind}" not in label_taken]
    colour = colour_names[int(rng.integers(len(colour_names)))]
    if kind == "box":
        size = tuple(float(round(v, 2)) for v in rng.uniform([0.4, 0.4, 0.3], [1.4, 1.4, 1.5]))
    elif kind == "sphere":
        d = float(round(rng.uniform(0.4, 1.2), 2))
        size = (d, d, d)
    else:
        d = float(round(rng.uniform(0.4, 1.0), 2))
        size = (d, d, float(round(rng.uniform(0.5, 1.6), 2)))
    texture = TEXTURES[int(rng.integers(1, len(TEXTURES)))] if rng.random() < 0.85 else "plain"
    common = dict(
        kind=kind, size=size, colour=colour, texture=texture,
        texture_scale=float(round(rng.uniform(0.25, 0.5), 2)),
        pos0=(float(round(rng.uniform(-2.6, 2.6), 2)), float(round(rng.uniform(3.0, 7.5), 2))),
        yaw0=float(round(rng.uniform(-np.pi, np.pi), 3)),
    )
    if not dynamic:
        return SceneObject(**common)  # type: ignore[arg-type]
    mode = rng.choice(["translate", "rotate", "both"], p=[0.45, 0.25, 0.3])
    vel, acc, yaw_rate = (0.0, 0.0), (0.0, 0.0), 0.0
    if mode in ("translate", "both"):
        heading = rng.uniform(-np.pi, np.pi)
        speed = rng.uniform(cfg.min_speed, cfg.max_speed)
        vel = (float(round(speed * np.cos(heading), 2)), float(round(speed * np.sin(heading), 2)))
        if rng.random() < 0.4:
            a = rng.uniform(0.15, 0.6)
            acc = (float(round(a * np.cos(heading), 2)), float(round(a * np.sin(heading), 2)))
    if mode in ("rotate", "both"):
        yaw_rate = float(round(rng.uniform(0.6, 2.0) * rng.choice([-1.0, 1.0]), 2))
    # motion starts on the half-second grid, uniformly up to 1 s before the end (so "when does it start?" has no
    # favourite answer, and at least 1 s of motion is visible)
    start = float(rng.choice(np.arange(0.0, max(duration_s - 1.0, 0.0) + 1e-9, 0.5)))
    if yaw_rate and common["texture"] == "plain":  # a plain sphere's spin would be invisible
        common["texture"] = "stripes"
    return SceneObject(**common, vel=vel, acc=acc, yaw_rate=yaw_rate, start_s=start)  # type: ignore[arg-type]


def _fits(obj: SceneObject, others: list[SceneObject], t: np.ndarray, cam_xy: np.ndarray, backdrop_y: float) -> bool:
    """No overlap with placed objects, never within 2 m of the camera, never through the backdrop."""
    c, _ = obj.pose(t)
    r = _footprint_radius(obj.size)
    if np.any(np.linalg.norm(c[:, :2] - cam_xy, axis=1) < 2.0 + r) or np.any(c[:, 1] > backdrop_y - 1.0 - r):
        return False
    for o in others:
        oc, _ = o.pose(t)
        if np.any(np.linalg.norm(c[:, :2] - oc[:, :2], axis=1) < r + _footprint_radius(o.size) + 0.15):
            return False
    return True


def duration_steps(cfg: SynthConfig) -> np.ndarray:
    """The video lengths a world draws from (s, ascending): ``min_duration_s`` to ``max_duration_s`` in 0.5 s steps."""
    return np.arange(cfg.min_duration_s, cfg.max_duration_s + 1e-9, 0.5)


def make_scene(cfg: SynthConfig, index: int) -> Scene:
    """The scene with ``index`` of a dataset with ``cfg.seed``; pure function of ``(cfg, index)``."""
    rng = scene_rng(cfg.seed, index, 0)
    steps = duration_steps(cfg)
    duration = float(steps[int(rng.integers(len(steps)))])
    # frame rates that fit the duration into max_frames (else the lowest rate, and the clip is cut at max_frames)
    fitting = [f for f in cfg.fps_choices if duration * f <= cfg.max_frames] or [min(cfg.fps_choices)]
    fps = float(fitting[int(rng.integers(len(fitting)))])
    num_frames = min(int(round(duration * fps)), cfg.max_frames)
    cam_moves = rng.random() < cfg.moving_camera_prob
    camera = Camera(
        width=cfg.width, height_px=cfg.height, fov_deg=float(round(rng.uniform(50.0, 65.0), 1)),
        height=float(round(rng.uniform(1.2, 2.0), 2)), pitch=float(round(np.deg2rad(rng.uniform(10.0, 20.0)), 4)),
        vel=(float(round(rng.uniform(-0.4, 0.4), 2)), float(round(rng.uniform(0.0, 0.25), 2))) if cam_moves else (0.0, 0.0),
        yaw_rate=float(round(rng.uniform(-0.08, 0.08), 3)) if cam_moves else 0.0,
    )
    t = np.arange(num_frames, dtype=np.float64) / fps
    cam_xy = camera.cam_to_world(t)[:, :2, 3]
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    objects: list[SceneObject] = []
    labels: set[str] = set()
    backdrop_y = 14.0
    for _ in range(n_obj):
        dynamic = rng.random() < cfg.dynamic_prob
        for attempt in range(12):
            obj = _sample_object(rng, cfg, labels, dynamic and attempt < 8, duration)
            if _fits(obj, objects, t, cam_xy, backdrop_y):
                objects.append(obj)
                labels.add(obj.label)
                break
    return Scene(
        scene_id=scene_id_for(index), index=index, seed=cfg.seed, fps=fps, num_frames=num_frames,
        camera=camera, objects=tuple(objects), ground_texture_scale=float(round(rng.uniform(0.8, 1.6), 2)),
        backdrop_y=backdrop_y,
    )
