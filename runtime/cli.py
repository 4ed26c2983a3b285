"""The command line of ``python -m flows.active_learning``: flags from the config's fields.

Light on purpose (argparse, pydantic, the config): the CLI parses and validates its
input before it starts the temporary server or imports JAX and Prefect, so bad input
is rejected at once and nothing is started or written.
"""

import argparse
import enum
import typing

from pydantic import ValidationError

import sources
from alcore.config import AUTO_FIELDS, ExperimentConfig
from store.layout import check_writable


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.active_learning",
        description="Run the active-learning experiment (defaults: the laplax tutorial's).",
    )
    for name, field in ExperimentConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = "depends on the data (see above)" if name in AUTO_FIELDS else field.default
        # No argparse defaults: a flag not given is left to the config, whose
        # defaults and validators decide (e.g. the passive baseline is off by default
        # with a human oracle).
        annotation = _unless_auto(name, field.annotation)
        if annotation is bool:
            p.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{field.description} (default: {default})",
            )
            continue
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is typing.Literal:
            choices, kind = args, str
        elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):  # laplax's StrEnums
            choices, kind = [member.value for member in annotation], str
        elif type(None) in args:  # an optional value: "none" on the command line
            choices, kind = None, _optional(next(a for a in args if a is not type(None)))
        else:
            choices, kind = None, annotation
        p.add_argument(flag, type=kind, default=None, choices=choices, help=f"{field.description} (default: {default})")
    p.add_argument("--refresh", action="store_true", help="ignore cached results and recompute every stage")
    p.add_argument(
        "--retries",
        type=int,
        default=0,
        help="retry the whole flow run this many times on failure (finished stages come back from the cache)",
    )
    p.add_argument("--status", action="store_true", help="show what is cached for this configuration and exit")
    p.add_argument(
        "--accept-platform-mix",
        action="store_true",
        help="resume from stages computed on another numeric platform (refused otherwise; see alcore/numerics.py)",
    )
    return p


def _unless_auto(name: str, annotation):
    """A data-dependent field's type without its None (None only means "not given":
    the flag's absence says that on the command line)."""
    if name not in AUTO_FIELDS:
        return annotation
    return next(a for a in typing.get_args(annotation) if a is not type(None))


def _optional(kind):
    def parse(text: str):
        return _NONE if text.strip().lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


_NONE = object()  # "none" given on the command line (argparse's None means "not given")


def parse_config(argv: list[str] | None = None) -> tuple[ExperimentConfig, argparse.Namespace]:
    """Build the config from flags; exits with a message naming the bad parameter."""
    p = parser()
    args = p.parse_args(argv)
    values = {name: getattr(args, name) for name in ExperimentConfig.model_fields if getattr(args, name) is not None}
    values = {name: None if value is _NONE else value for name, value in values.items()}
    try:
        config = sources.resolve(ExperimentConfig(**values))  # a data file is read and checked here
        check_writable(config.artifacts_dir)
    except ValidationError as e:
        p.error("; ".join(_describe(err) for err in e.errors()))
    except ValueError as e:
        p.error(str(e))
    if args.retries < 0:
        p.error(f"--retries: must be >= 0 (got {args.retries})")
    return config, args


def _describe(err: dict) -> str:
    where = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-") if err["loc"] else "config"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"
