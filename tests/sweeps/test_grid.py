"""lora_theory.sweeps.grid: grids from Python and TOML, content hashes of points."""
from __future__ import annotations

import pytest

import lora_theory
from lora_theory.sweeps import grid, load_toml, point_hash
from tests.sweeps.probes import sleepy_square


def test_grid_is_the_cartesian_product_last_axis_fastest():
    pts = grid(x=[1, 2], y=["a", "b", "c"])
    assert len(pts) == 6
    assert pts[:4] == [{"x": 1, "y": "a"}, {"x": 1, "y": "b"}, {"x": 1, "y": "c"}, {"x": 2, "y": "a"}]


@pytest.mark.parametrize(("axes", "match"), [
    ({"x": []}, "x: expected a non-empty list"),
    ({"x": "abc"}, "x: expected a non-empty list"),
    ({"x": [1.0, float("nan")]}, r"x\[1\]: expected a finite number"),
    ({"x": [object()]}, r"x\[0\]: expected a JSON value"),
])
def test_grid_rejects_bad_axes(axes, match):
    with pytest.raises(ValueError, match=match):
        grid(**axes)


def test_hash_covers_name_params_seed_and_version(monkeypatch):
    h = point_hash("s", {"x": 1, "y": 2}, 0)
    assert h == point_hash("s", {"y": 2, "x": 1}, 0)  # key order does not matter
    others = {point_hash("t", {"x": 1, "y": 2}, 0), point_hash("s", {"x": 1, "y": 3}, 0), point_hash("s", {"x": 1.0, "y": 2}, 0),
              point_hash("s", {"x": 1, "y": 2}, 1), point_hash("s", {"x": 1, "y": 2}, None)}
    assert h not in others and len(others) == 5
    monkeypatch.setattr(lora_theory._version, "__version__", "999.0")
    assert point_hash("s", {"x": 1, "y": 2}, 0) != h  # a new toolkit version recomputes


def test_hash_rejects_values_it_cannot_identify():
    with pytest.raises(ValueError, match="points\\['x'\\]: expected a JSON value"):
        point_hash("s", {"x": {1, 2}})
    with pytest.raises(ValueError, match="expected parameter names that are identifiers"):
        point_hash("s", {"not a name": 1})


def test_toml_grid(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "sq"\nseed = 7\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0, 2.0, 3.0]\ndelay = [0.0]\n')
    spec = load_toml(f)
    assert spec.name == "sq" and spec.fn is sleepy_square and spec.seed == 7
    assert spec.points == [{"x": 1.0, "delay": 0.0}, {"x": 2.0, "delay": 0.0}, {"x": 3.0, "delay": 0.0}]
    f.write_text('name = "sq"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0]\n')
    assert load_toml(f).seed == 0  # the default seed


@pytest.mark.parametrize(("text", "match"), [
    ('name = "sq"\nfunction = "nope:nothing"\n[grid]\nx = [1.0]\n', "function: expected 'module:attr'"),
    ('name = "sq"\nfunction = "lora_theory:__version__"\n[grid]\nx = [1.0]\n', "function: expected a callable"),
    ('function = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0]\n', "expected a 'name' entry"),
    ('name = "sq"\nseed = "one"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0]\n', "seed: expected an integer"),
    ('name = "sq"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = []\n', "x: expected a non-empty list"),
    ("name = [unclosed\n", "expected a readable TOML sweep file"),
])
def test_toml_errors_name_the_problem(tmp_path, text, match):
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_toml(f)
    with pytest.raises(ValueError, match="readable TOML"):
        load_toml(tmp_path / "missing.toml")
