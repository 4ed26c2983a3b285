"""Stage keys derived from declarations, the code version, the strategy registry, the store.

No Prefect server, no training: seconds.
"""

import shutil
import subprocess
import sys
import textwrap
import typing

import numpy as np
import pytest

from alcore import stages as st
from alcore import strategies
from alcore.config import ExperimentConfig
from alcore.experiment import ModelState
from store import files
from store.code_version import cached_code_version, code_version
from store.experiment import Store
from tests.helpers import ROOT

KEYED = [st.DATA, st.INITIAL, st.CALIBRATION, st.ROUND, st.PASSIVE]


def _keys(config, code="v") -> dict[str, str]:
    return {s.name: s.key(config, code_version=code, round_index=3 if s.per_round else None) for s in KEYED}


def _downstream(names: set[str]) -> set[str]:
    """The named stages and every stage that runs after one of them (from `after`)."""
    out = set(names)
    changed = True
    while changed:
        changed = False
        for s in st.STAGES.values():
            if s.name not in out and out & set(s.after):
                out.add(s.name)
                changed = True
    return out


def _other_value(config, field):
    value = getattr(config, field)
    info = ExperimentConfig.model_fields[field]
    choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else None
    if isinstance(value, bool):
        return not value
    if value is None:
        return "x"
    if choices and isinstance(value, str):
        return next(c for c in choices if c != value)
    if isinstance(value, str):
        return value + "-other"
    if field == "log_prior_prec_min":
        return value - 1
    return value + 1 if isinstance(value, int) else value * 1.5


def test_every_field_is_read_by_a_stage_or_changes_no_number():
    read = {f for s in st.STAGES.values() for f in s.reads} - st.DERIVED
    fields = set(ExperimentConfig.model_fields)
    assert fields == read | set(st.FLOW_FIELDS), sorted(fields ^ (read | set(st.FLOW_FIELDS)))
    assert not read & set(st.FLOW_FIELDS)


@pytest.mark.parametrize("field", sorted(set(ExperimentConfig.model_fields) - {"data_file", "class_names"}))
def test_a_field_changes_the_keys_of_exactly_the_stages_that_read_it(field):
    base = ExperimentConfig()
    changed_config = base.model_copy(update={field: _other_value(base, field)})
    before, after = _keys(base), _keys(changed_config)
    changed = {name for name in before if before[name] != after[name]}
    readers = {s.name for s in KEYED if field in s.reads}
    assert changed == _downstream(readers) & set(before), field


def test_a_new_field_changes_only_the_keys_of_the_stages_that_declare_it():
    class Extended(ExperimentConfig):
        temperature: float = 1.0

    probe = st.Stage("probe", reads=("temperature", "seed"), after=("calibration",))
    try:
        a, b = Extended(), Extended(temperature=2.0)
        assert _keys(a) == _keys(b)  # no existing stage reads it
        assert probe.key(a, code_version="v") != probe.key(b, code_version="v")
        assert st.experiment_digest(a) == st.experiment_digest(b)
    finally:
        del st.STAGES["probe"]


def test_a_stage_cannot_read_a_field_it_does_not_declare():
    @st.INITIAL
    def sneaky(cfg):
        return cfg.acquisition

    with pytest.raises(st.UndeclaredField, match="'initial' reads the configuration field 'acquisition'"):
        sneaky(ExperimentConfig())
    assert st.INITIAL.view(ExperimentConfig()).initial_epochs == 1000


def test_keys_depend_on_round_and_code_version_and_name_folders_without_rounds():
    c = ExperimentConfig()
    assert st.ROUND.key(c, code_version="a", round_index=1) != st.ROUND.key(c, code_version="a", round_index=2)
    assert st.ROUND.key(c, code_version="a", round_index=1) != st.ROUND.key(c, code_version="b", round_index=1)
    longer = c.model_copy(update={"rounds": 80})
    assert st.experiment_digest(c) == st.experiment_digest(longer)  # a longer run extends the folder
    assert st.passive_digest(c) != st.passive_digest(longer)  # the passive budget grows with it
    assert st.experiment_digest(c) == st.experiment_digest(c.model_copy(update={"artifacts_dir": "x"}))


# ------------------------------------------------------------------ code version


@pytest.fixture
def core_copy(tmp_path):
    dest = tmp_path / "alcore"
    shutil.copytree(ROOT / "alcore", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_code_version_ignores_comments_docstrings_and_formatting(core_copy):
    before = code_version(core_copy)
    _edit(core_copy / "training.py", '"""Training exactly', '"""Training, reworded: exactly')
    _edit(core_copy / "laplace.py", "CHUNK = 64  #", "CHUNK = 64  # a new comment;")
    _edit(core_copy / "model.py", "HIDDEN_LAYERS = 3  #", "HIDDEN_LAYERS = (\n    3\n)  #")
    _edit(core_copy / "experiment.py", "def accuracy(preds", "\n\n# spacing\ndef accuracy(preds")
    _edit(core_copy / "sweep_stats.py", "level: float = 0.95", "level: float = 0.9")  # not a stage's code
    assert code_version(core_copy) == before


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("laplace.py", "CHUNK = 64", "CHUNK = 500"),
        ("calibration.py", "N_ECE_BINS = 15", "N_ECE_BINS = 10"),
        ("training.py", "return optax.adam(learning_rate)", "return optax.adamw(learning_rate)"),
        ("__init__.py", 'MATH_VERSION = "4"', 'MATH_VERSION = "5"'),
    ],
)
def test_code_version_changes_with_the_math(core_copy, module, old, new):
    before = code_version(core_copy)
    _edit(core_copy / module, old, new)
    assert code_version(core_copy) != before


def test_a_new_module_counts_once_a_stage_uses_it(core_copy):
    before = code_version(core_copy)
    (core_copy / "extra.py").write_text("SCALE = 2.0\n")
    assert code_version(core_copy) == before
    _edit(core_copy / "experiment.py", "from alcore import acquisition,", "from alcore import extra, acquisition,")
    with_import = code_version(core_copy)
    assert with_import != before
    (core_copy / "extra.py").write_text("SCALE = 3.0\n")
    assert code_version(core_copy) != with_import


def test_the_kept_code_version_is_the_computed_one_and_any_edit_computes_it_again(core_copy, tmp_path):
    kept = tmp_path / "kept"
    first = cached_code_version(core_copy, folder=kept)
    assert first == code_version(core_copy) and len(list(kept.iterdir())) == 1
    (next(kept.iterdir())).write_text("0123456789ab")  # what is kept is what is returned
    assert cached_code_version(core_copy, folder=kept) == "0123456789ab"
    _edit(core_copy / "laplace.py", "CHUNK = 64", "CHUNK = 500")
    assert cached_code_version(core_copy, folder=kept) == code_version(core_copy) != first
    _edit(core_copy / "laplace.py", "CHUNK = 500  #", "CHUNK = 500  # only a comment, but new bytes;")
    assert cached_code_version(core_copy, folder=kept) == code_version(core_copy)
    assert len(list(kept.iterdir())) == 3
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a folder that cannot be made, even by root: computed, not kept
    _edit(core_copy / "model.py", "HIDDEN_LAYERS = 3", "HIDDEN_LAYERS = 2")
    assert cached_code_version(core_copy, folder=blocked / "kept") == code_version(core_copy)


# ------------------------------------------------------------------ strategy registry


REGISTER_ONE = textwrap.dedent(
    """
    import json
    from alcore import strategies
    strategies.register(strategies.Strategy("toy", "a strategy registered in one place", "uniform"))
    from alcore.config import ExperimentConfig
    from runtime.cli import parse_config
    from flows.sweep import parse_strategy
    from prefect.utilities.callables import parameter_schema
    from flows.active_learning import active_learning
    config, _ = parse_config(["--acquisition", "toy"])
    schema = parameter_schema(active_learning).model_dump()
    print(json.dumps({
        "config": ExperimentConfig(acquisition="toy").acquisition,
        "cli": config.acquisition,
        "sweep": parse_strategy("toy:k2"),
        "form": schema["definitions"]["ExperimentConfig"]["properties"]["acquisition"]["enum"],
    }))
    """
)


@pytest.mark.slow  # a fresh interpreter: the registry is global
def test_a_registered_strategy_is_accepted_by_config_cli_form_and_sweep():
    proc = subprocess.run(
        [sys.executable, "-c", REGISTER_ONE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["config"] == out["cli"] == "toy"
    assert out["sweep"] == ["toy", 2]
    assert out["form"] == [*strategies.names(), "toy"]


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        strategies.register(strategies.Strategy("bald", "again", "uniform"))
    with pytest.raises(ValueError, match="unknown acquisition strategy 'kmeans'"):
        strategies.get("kmeans")
    assert strategies.get("bald").needs_covariance and not strategies.get("max_std").needs_covariance
    assert strategies.get("sampled").uses_key and not strategies.get("max_std").uses_key


# ------------------------------------------------------------------ the store


def _round_record(r: int) -> st.RoundRecord:
    state = ModelState({"w": np.full(3, float(r))}, ())
    return st.RoundRecord(r, [r], np.zeros((1, 2)), [1], "truth", 0.5 + r / 100, np.zeros(4), np.zeros(4, np.int8),
                          np.zeros((r, 2)), np.zeros(r), state, np.zeros(2))  # fmt: skip


def test_store_restores_the_longest_valid_prefix(tmp_path):
    config = ExperimentConfig(rounds=4, artifacts_dir=str(tmp_path))
    store = Store(config, code_version="v1")
    from alcore.data import Data

    data = Data(*([np.zeros(2)] * 8), sampling_key=np.zeros(2, np.uint32))
    store.save(st.DATA, data)
    store.save(st.INITIAL, st.Initial(ModelState({}, ()), np.zeros(1), 0.7), seconds=1.5)
    store.save(st.CALIBRATION, st.Calibration(0.4, np.ones(3), np.ones(3), "ece"))
    for r in (1, 2, 3, 4):
        store.save(st.ROUND, _round_record(r), r, seconds=r / 100)
    assert store.probe() == 7
    full = Store(config, code_version="v1").restore()  # a fresh process's store
    assert full.names == ["data", "initial", "calibration", "round-01", "round-02", "round-03", "round-04"]
    assert full.seconds == {
        "data": None,
        "initial": 1.5,
        "calibration": None,
        **{f"round-0{r}": r / 100 for r in range(1, 5)},
    }
    assert full.last_round.round == 4 and full.rounds[2].accuracy == pytest.approx(0.53)

    damaged = store.file(st.ROUND, 3)
    raw = bytearray(damaged.read_bytes())
    raw[-5] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    partial = store.restore()
    assert partial.names[-1] == "round-02" and partial.last_round.round == 2
    assert len(partial.warnings) == 1 and str(damaged) in partial.warnings[0] and "checksum" in partial.warnings[0]

    other_code = Store(config, code_version="v2").restore()
    assert other_code.names == [] and "another code version" in other_code.notes[0]
    with pytest.raises(files.StaleFile):
        Store(config, code_version="v2").load(st.DATA)


def test_a_rounds_acquisition_is_kept_for_exactly_its_labels_and_exclusions(tmp_path):
    config = ExperimentConfig(artifacts_dir=str(tmp_path), oracle="human", rounds=5)
    store = Store(config, code_version="v1")
    y, exclude = np.array([0, 2, 1, 1], np.int32), [7, 3]
    acquired = st.Acquired(
        [42], np.array([[0.1, 0.2]], np.float32), np.arange(5, dtype=np.float32), np.zeros(5, np.int8)
    )
    assert store.load_acquired(3, y, exclude) is None
    store.save_acquired(3, y, exclude, acquired)
    again = Store(config, code_version="v1").load_acquired(3, y, [3, 7])  # a new process; exclusions as a set
    assert again.indices == [42] and np.array_equal(again.scores, acquired.scores)
    assert store.load_acquired(3, np.array([0, 2, 1, 0], np.int32), exclude) is None  # another answer before it
    assert store.load_acquired(3, y, [7]) is None  # another exclusion (a point the person could not label)
    assert store.load_acquired(4, y, exclude) is None  # another round
    assert Store(config, code_version="v2").load_acquired(3, y, exclude) is None  # other code
    store.save_acquired(4, np.append(y, 1), exclude, acquired)  # the next round's: only the latest is kept
    assert store.load_acquired(3, y, exclude) is None
    assert [p.name for p in (store.workspace.root / "asked").iterdir()] == ["round-004.joblib"]
