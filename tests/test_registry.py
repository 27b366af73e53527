"""The method registry: every method declared once, every entry and every grid file validates,
bad parameters and budgets are refused with messages that name what is wrong."""

import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from ttc import claims as C
from ttc import registry as REG
from ttc.errors import ConfigError
from ttc.methods import check_budgets, make_spec
from ttc.search import pool
from ttc.search.loop import METHODS as LOOP_METHODS
from ttc.search.loop import SearchConfig, SearchParams

CONF = Path(__file__).resolve().parents[1] / "conf"


def _entries(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["methods"]


def test_each_method_is_declared_once_and_read_from_the_registry():
    declared = [m.name for m in REG._DECLARED]
    assert len(declared) == len(set(declared)) == len(REG.METHODS)
    assert list(REG.METHODS) == declared
    with pytest.raises(ValueError, match="declared twice"):
        REG._index((REG.METHODS["bon"], REG.METHODS["bon"]))
    # the search loop, the pool estimators and the claims read the registry
    assert LOOP_METHODS == REG.names(REG.KIND_SEARCH) == (
        "beam", "dvts", "lookahead", "particle", "pgibbs", "tempering", "rebase")
    assert set(pool.POOL_METHODS) | set(pool.SCORED_METHODS) == set(REG.names(REG.KIND_POOL))
    assert not set(pool.POOL_METHODS) & set(pool.SCORED_METHODS)
    assert all(C.REG.is_search(n) for n in LOOP_METHODS) and not REG.is_search("bon")
    assert not REG.is_search("no-such-method")
    hash(REG.METHODS["particle"])  # frozen: hashable
    for m in REG.METHODS.values():
        assert m.summary and m.paper
        assert m.needs_reward == ("reward" in m.param_names)
        assert not m.step_reward or m.kind == REG.KIND_SEARCH


def test_every_registry_entry_validates_with_defaults_and_explicit_defaults():
    for m in REG.METHODS.values():
        bare = make_spec({"name": m.name})
        full = make_spec({"name": m.name, "label": f"{m.name}_x", **m.defaults()})
        assert bare.label == m.name and full.label == f"{m.name}_x"
        assert bare.params == () and dict(full.params) == m.defaults()
        for k in m.param_names:
            assert bare.value(k) == full.value(k) == m.param(k).default
        if m.kind == REG.KIND_SEARCH:
            assert bare.search_config() == full.search_config()
            check_budgets(full, (1, 2, 4, 8, 16, 32))


def test_registry_defaults_are_the_search_loops_defaults():
    cfg = SearchConfig(method="beam")
    for f in dataclasses.fields(SearchConfig):
        if f.name != "method":
            assert getattr(cfg, f.name) == getattr(REG, f.name.upper()).default, f.name
    hp, ref = make_spec({"name": "beam"}).search_params(), SearchParams.make()
    assert float(hp.temperature) == float(ref.temperature) == REG.TEMPERATURE.default
    assert float(hp.ess_threshold) == float(ref.ess_threshold) == REG.ESS_THRESHOLD.default
    pf = make_spec({"name": "particle", "temperature": 0.5, "ess_threshold": 0.25,
                    "scheme": "residual", "incremental": True})
    assert float(pf.search_params().temperature) == 0.5
    assert pf.search_config() == SearchConfig(method="particle", scheme="residual",
                                              incremental=True)


def test_the_default_grid_lists_every_method_and_every_grid_file_validates():
    grid = _entries(CONF / "method" / "all.yaml")
    assert {e["name"] for e in grid} == set(REG.METHODS)
    search_budgets = tuple(yaml.safe_load((CONF / "config.yaml").read_text())["search_budgets"])
    for path in sorted((CONF / "method").glob("*.yaml")):
        specs = [make_spec(e) for e in _entries(path)]
        labels = [s.label for s in specs]
        assert len(labels) == len(set(labels)), path
        for s in specs:
            check_budgets(s, search_budgets)


BAD = [
    # (entry, substrings of the message besides the label)
    ({"name": "particle", "ess_threshold": 1.5}, ["ess_threshold=1.5", "out of range", "[0, 1]"]),
    ({"name": "particle", "ess_threshold": -0.1}, ["ess_threshold=-0.1", "[0, 1]"]),
    ({"name": "particle", "temperature": 0.0}, ["temperature=0.0", "out of range", "(0, inf)"]),
    ({"name": "particle", "temperature": -1}, ["temperature=-1", "(0, inf)"]),
    ({"name": "particle", "temperature": math.nan}, ["temperature=nan", "not finite", "(0, inf)"]),
    ({"name": "particle", "temperature": math.inf}, ["temperature=inf", "not finite"]),
    ({"name": "particle", "temperature": "hot"}, ["temperature='hot'", "not a number"]),
    ({"name": "particle", "scheme": "bogus"},
     ["scheme='bogus'", "'multinomial', 'systematic', 'stratified', 'residual'"]),
    ({"name": "particle", "incremental": "yes"}, ["incremental='yes'", "not a boolean"]),
    ({"name": "particle", "incremental": 1}, ["incremental=1", "must be a boolean"]),
    ({"name": "bon_loglik", "length_normalize": "false"},
     ["length_normalize='false'", "a boolean"]),
    ({"name": "beam", "beam_width": 0}, ["beam_width=0", "out of range", "[1, inf)"]),
    ({"name": "beam", "beam_width": 2.5}, ["beam_width=2.5", "not an integer"]),
    ({"name": "dvts", "beam_width": True}, ["beam_width=True", "not an integer"]),
    ({"name": "lookahead", "beam_width": "4"}, ["beam_width='4'", "an integer in [1, inf)"]),
    ({"name": "lookahead", "lookahead": -1}, ["lookahead=-1", "[0, inf)"]),
    ({"name": "bon", "reward": "oracle", "flip": 1.5}, ["flip=1.5", "[0, 1]"]),
    ({"name": "bon", "reward": "oracle", "noise": -0.1}, ["noise=-0.1", "[0, 1]"]),
    ({"name": "weighted_majority", "aggregation": "median"},
     ["aggregation='median'", "'last', 'min', 'prod', 'mean'"]),
    ({"name": "bon", "reward": "gpt"}, ["reward='gpt'", "'prm', 'orm', 'oracle'"]),
    ({"name": "dvts", "final": "vote"}, ["final='vote'", "'weighted_majority', 'argmax'"]),
    ({"name": "majority", "reward": "prm"}, ["does not take ['reward']", "no parameters"]),
    ({"name": "beam", "temperature": 1.0}, ["does not take ['temperature']", "beam_width"]),
    ({"name": "beam", "reward": "orm"}, ["needs a step reward", "reward='orm'"]),
    ({"name": "particle", "reward": "orm"}, ["needs a step reward"]),
    ({"name": "bon", "reward": "prm", "flip": 0.1}, ["flip=0.1", "reward='prm'", "oracle"]),
    ({"name": "beam", "noise": 0.2}, ["noise=0.2", "reward='prm'"]),
]


@pytest.mark.parametrize(("entry", "parts"), BAD, ids=[str(e) for e, _ in BAD])
def test_bad_parameters_name_the_method_parameter_value_and_range(entry, parts):
    with pytest.raises(ConfigError) as err:
        make_spec({**entry, "label": "my_cell"})
    msg = str(err.value)
    assert "'my_cell'" in msg, msg
    for part in parts:
        assert part in msg, (part, msg)
    assert "\n" not in msg


@pytest.mark.parametrize(("entry", "part"), [
    ({"label": "x"}, "needs a name"),
    ({"name": "nope"}, "unknown method 'nope'; available: ['single'"),
    ({"name": ["beam"]}, "unknown method"),
])
def test_bad_names_are_config_errors(entry, part):
    with pytest.raises(ConfigError) as err:
        make_spec(entry)
    assert part in str(err.value)


def test_good_values_at_the_edges_are_accepted():
    make_spec({"name": "particle", "ess_threshold": 0, "temperature": 1e-3})
    make_spec({"name": "particle", "ess_threshold": 1})
    make_spec({"name": "bon", "reward": "oracle", "flip": 1.0, "noise": 0})
    make_spec({"name": "lookahead", "lookahead": 0, "beam_width": 1})
    make_spec({"name": "bon", "reward": "prm", "flip": 0.0})  # a zero perturbation is harmless


@pytest.mark.parametrize(("entry", "budgets", "ok"), [
    ({"name": "beam", "beam_width": 4}, (2, 8, 32), True),  # N=2 < M: runs with M=N
    ({"name": "beam", "beam_width": 4}, (3, 4), True),
    ({"name": "beam", "beam_width": 4}, (6,), False),
    ({"name": "dvts", "beam_width": 3}, (9, 12), True),
    ({"name": "dvts", "beam_width": 3}, (9, 10, 14), False),
    ({"name": "lookahead"}, (1, 2, 4, 6), False),  # default beam_width 4
    ({"name": "particle"}, (3, 5, 7), True),
    ({"name": "bon"}, (3, 5, 7), True),
])
def test_check_budgets_agrees_with_the_search_loop(entry, budgets, ok):
    spec = make_spec({**entry, "label": "cell"})
    if ok:
        check_budgets(spec, budgets)
    else:
        with pytest.raises(ConfigError) as err:
            check_budgets(spec, budgets)
        msg = str(err.value)
        assert "'cell'" in msg and "beam_width=" in msg and "search_budgets=" in msg, msg
    if spec.kind == REG.KIND_SEARCH and spec.name != "particle":
        width_ok = True
        for n in budgets:
            try:
                spec.search_config().width(n)
            except ValueError:
                width_ok = False
        assert width_ok == ok


def test_check_budgets_refuses_non_positive_budgets():
    for bad in ((0,), (2, -4), (2.0,)):
        with pytest.raises(ConfigError, match="search_budgets must be positive integers"):
            check_budgets(make_spec({"name": "particle"}), bad)


def test_param_spec_describes_its_range():
    assert REG.ESS_THRESHOLD.allowed() == "a number in [0, 1]"
    assert REG.TEMPERATURE.allowed() == "a number in (0, inf)"
    assert REG.BEAM_WIDTH.allowed() == "an integer in [1, inf)"
    assert REG.INCREMENTAL.allowed() == "a boolean"
    with pytest.raises(ValueError, match="default"):
        REG.ParamSpec(name="x", type=float, default=2.0, low=0.0, high=1.0, doc="d")
    # the loop's own constructors check with the same specs (ValueError: library callers)
    with pytest.raises(ValueError, match=r"ess_threshold=1\.5"):
        SearchParams.make(ess_threshold=1.5)
    with pytest.raises(ValueError, match="temperature=0"):
        SearchParams.make(temperature=0)
    with pytest.raises(ValueError, match="beam_width=0"):
        SearchConfig(method="beam", beam_width=0)
