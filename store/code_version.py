"""The code version in every stage's key: a hash of the math the stages compute with.

Only ``alcore``'s modules count (files elsewhere can move or change without touching a
stored result): the syntax trees, docstrings stripped, of the core modules the stages
reach through their imports, and ``alcore.MATH_VERSION``.

Parsing them costs about 0.2 s, at every process's start (a deployment run, a run a
person's answer resumes, each Dask worker): :func:`cached_code_version` keeps the
result in the user's cache, under a hash of the raw bytes of ``alcore``'s modules and of
this file, so any edit computes it again.
"""

import ast
import hashlib
import os
from pathlib import Path

from alcore import compile_cache

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


def _sources_digest(core: Path, entry: str) -> str:
    h = hashlib.sha256(entry.encode() + b"\0" + Path(__file__).read_bytes())
    for path in sorted(core.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def cache_dir(environ=None) -> Path:
    return compile_cache.user_cache(environ) / "code-version"


def cached_code_version(core: Path = _CORE, entry: str = "stages", folder: Path | None = None) -> str:
    """:func:`code_version`, kept in ``folder`` (default :func:`cache_dir`) under a hash of
    the sources' bytes. A cache that cannot be read or written is only not used."""
    core = Path(core)
    path = (folder or cache_dir()) / _sources_digest(core, entry)
    try:
        kept = path.read_text()
        if len(kept) == 12 and all(c in "0123456789abcdef" for c in kept):
            return kept
    except OSError:
        pass
    version = code_version(core, entry)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(version)
        partial.replace(path)
    except OSError:
        pass
    return version


CODE_VERSION = cached_code_version()
