"""The command line every job entry point shares: ``--config`` files, ``key=value`` overrides, ``--print-config``.

    parser = job_parser(__doc__, "conf/eval/*.yaml", "engine.checkpoint=out/ckpt")
    parser.add_argument(...)                       # the job's own flags
    args = parser.parse_args(argv)
    job = job_from_args(EvaluateJob, args)         # None: --print-config printed the resolved config
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from rgpt4d_core.config import load, to_yaml

T = TypeVar("T")


def job_parser(doc: str | None, configs: str, override_example: str, out_help: str | None = None,
               full_doc: bool = False) -> argparse.ArgumentParser:  # fmt: skip
    """The parser of a job: ``--config`` (repeatable, merged in order), ``--print-config``, positional ``key=value``
    overrides and, with ``out_help``, ``--out`` (shorthand for the ``out=`` override).

    Args:
        doc: the entry point's module docstring (its first line is the description, all of it with ``full_doc``).
        configs: what ``--config`` takes, e.g. ``"conf/eval/*.yaml"``.
        override_example: an example override for the help text, e.g. ``"loop.epochs=2"``.
    """
    text = doc or ""
    parser = argparse.ArgumentParser(description=text if full_doc else text.splitlines()[0] if text else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", action="append", default=[], help=f"YAML file(s) ({configs}), merged in order")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    if out_help:
        parser.add_argument("--out", help=out_help)
    parser.add_argument("overrides", nargs="*", help=f"dotted key=value overrides, e.g. {override_example}")
    return parser


def job_from_args(job_cls: type[T], args: argparse.Namespace, default_config: Sequence[str | Path] = (),
                  loader: Callable[[list[str], list[str]], T] | None = None) -> T | None:  # fmt: skip
    """The job of ``args``: ``job_cls`` defaults ⊕ ``--config`` files (``default_config`` when none) ⊕ overrides
    (then ``out=<--out>``). With ``--print-config`` it prints the resolved config and returns ``None``.

    Args:
        loader: ``(files, overrides) -> job`` instead of :func:`rgpt4d_core.config.load` (e.g. one that pins paths).
    """
    files = list(args.config) or [str(f) for f in default_config]
    overrides = [*args.overrides, *([f"out={args.out}"] if getattr(args, "out", None) else [])]
    job = loader(files, overrides) if loader is not None else load(job_cls, files, overrides)
    if args.print_config:
        print(to_yaml(job))
        return None
    return job
