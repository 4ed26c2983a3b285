"""Where an experiment's files live, and the code version in every cache key.

No Prefect here: the CLI's ``--status`` and the tests read experiments through it.
"""

import ast
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alcore.config import ExperimentConfig
from alcore.stages import experiment_digest, passive_digest
from tasks import storage

_ROOT = Path(__file__).resolve().parent.parent
_CORE = _ROOT / "alcore"


def _core_imports(tree: ast.AST, core: Path) -> set[str]:
    """Names of the ``alcore`` modules a module's code imports (anywhere in it)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "alcore":
            if node.module == "alcore":
                names |= {alias.name for alias in node.names}
            else:
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("alcore.")}
    return {n for n in names if (core / f"{n}.py").exists()}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return tree


def code_version(core: Path = _CORE, entry: str = "stages") -> str:
    """Short hash of the math the stages compute with.

    The modules are those of ``alcore`` that ``alcore/<entry>.py`` imports,
    directly or through each other (found by reading their imports, so a new module
    is included as soon as it is used). Each is hashed as its syntax tree without
    docstrings: comments, docstrings and formatting do not change the version, any
    change to the code does (``alcore.MATH_VERSION`` is in it: bump it to invalidate
    results when a dependency's upgrade changes numbers).
    """
    core = Path(core)
    seen, todo = set(), [entry, "__init__"]
    trees = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((core / f"{name}.py").read_text())
        trees[name] = ast.dump(_strip_docstrings(tree), include_attributes=False)
        todo.extend(_core_imports(tree, core) - seen)
    h = hashlib.sha256()
    for name in sorted(trees):
        h.update(name.encode() + b"\0" + trees[name].encode() + b"\0")
    return h.hexdigest()[:12]


CODE_VERSION = code_version()

JAX_CACHE_ENV = "BAL_JAX_CACHE_DIR"


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (idempotent); returns its folder.

    Every run compiles the same programs (training scans, the grid prediction, the
    Laplace fit and map, the model's initialisation): with the cache, runs after the
    first (a schedule, a sweep, a resume) load them from disk instead. ``BAL_JAX_CACHE_DIR`` chooses the folder (default
    ``~/.cache/bal-pipeline/jax``); ``off`` disables it. Numbers do not change: the
    cache holds the compiled programs, not results.
    """
    import jax

    folder = os.environ.get(JAX_CACHE_ENV, str(Path.home() / ".cache" / "bal-pipeline" / "jax"))
    if folder.lower() == "off":
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


@dataclass(frozen=True)
class Workspace:
    """The output folder of one experiment: ``<artifacts_dir>/al-<round hash>/``.

    The folder is named by the hash of the round-relevant parameters, so the same
    command finds its earlier rounds, a longer run extends a shorter one, and a
    different configuration never touches another's files.
    """

    root: Path

    @classmethod
    def for_config(cls, config: ExperimentConfig) -> "Workspace":
        return cls(Path(config.artifacts_dir).expanduser().resolve() / f"al-{experiment_digest(config)}")

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def results_file(self) -> Path:
        return self.root / "results.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def stage_file(self, stage: str) -> Path:
        """File of a one-off stage: data, initial, calibration."""
        return self.root / f"{stage}.joblib"

    def round_file(self, round_index: int) -> Path:
        return self.root / "rounds" / f"round-{round_index:03d}.joblib"

    def passive_file(self, config: ExperimentConfig) -> Path:
        """The passive baseline's file, shared by every experiment with the same budget
        and training schedule (it does not depend on the acquisition strategy), so a
        sweep trains one per seed: ``<artifacts_dir>/passive/passive-<hash>.joblib``."""
        return self.root.parent / "passive" / f"passive-{passive_digest(config)}.joblib"

    def write_config(self, config: ExperimentConfig) -> None:
        storage.write_text(self.config_file, json.dumps(config.model_dump(), indent=2, sort_keys=True) + "\n")


def check_writable(folder: str | Path) -> Path:
    """Resolve ``folder`` and make sure files can be created in it (before any compute).

    Raises:
        ValueError: naming the folder and why it cannot be written.
    """
    path = Path(folder).expanduser().resolve()
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ValueError(f"artifacts_dir {str(folder)!r}: {probe_dir} exists and is not a folder")
    try:  # a real probe: os.access says yes to root on read-only mounts
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as e:
        raise ValueError(f"artifacts_dir {str(folder)!r}: cannot create files in {probe_dir} ({e.strerror})") from e
    return path
