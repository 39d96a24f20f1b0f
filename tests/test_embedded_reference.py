"""The embedded models give bit-identical outputs for fixed seeds: refactors must not change a single pixel.

References: tests/data/embedded_reference.json, written by tests/make_reference_outputs.py (the cases are defined
there). When the embedded weights change the references are stale, and this test says so instead of listing
pixel differences."""
import json

import numpy as np
import pytest

import make_reference_outputs as ref


def _reference() -> dict:
    if not ref.REFERENCE.is_file():
        pytest.fail(f"{ref.REFERENCE} is missing: write it with `{ref.COMMAND}`")
    return json.loads(ref.REFERENCE.read_text(encoding="utf-8"))


# On another CPU or library build the kernels may sum floats in another order: outputs then differ by float
# rounding (seen: 3e-5 on a float grid, no uint8 pixel), so only the sampled values are compared, within these.
TOLERANCE = {"u": 1, "i": 1, "f": 1e-3}


def differences(expected: dict[str, dict], actual: dict[str, dict], exact: bool = True) -> list[str]:
    """One line per output whose hash differs (with how far the sampled values are), missing or unexpected;
    ``exact=False`` accepts sampled values within TOLERANCE of the references."""
    lines = []
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            lines.append(f"{name}: expected but no longer produced")
        elif name not in expected:
            lines.append(f"{name}: produced but not in the references")
        elif expected[name]["sha256"] != actual[name]["sha256"]:
            e, a = expected[name], actual[name]
            if (e["shape"], e["dtype"]) != (a["shape"], a["dtype"]):
                lines.append(f"{name}: {a['dtype']} {a['shape']} instead of {e['dtype']} {e['shape']}")
                continue
            ev, av = np.float64(e["values"]), np.float64(a["values"])
            # NaN is a value here (an uncertainty map's "no estimate"): NaN against NaN agrees, against a number not
            diff = np.where(np.isnan(ev) & np.isnan(av), 0.0, np.nan_to_num(np.abs(ev - av), nan=np.inf))
            if not exact and diff.max() <= TOLERANCE.get(np.dtype(a["dtype"]).kind, 0):
                continue
            lines.append(f"{name}: bytes differ; {int((diff > 0).sum())} of {diff.size} sampled values differ, "
                         f"by up to {diff.max():g}")
    return lines


@pytest.mark.parametrize("family", list(ref.FAMILIES))
def test_embedded_model_outputs_are_bit_identical(family):
    data = _reference()
    if family not in data:
        pytest.fail(f"no {family} references in {ref.REFERENCE.name}: write them with `{ref.COMMAND} {family}`")
    expected = data[family]
    now = ref.weights_hash(ref.FAMILIES[family])
    if expected["weights_sha256"] != now:
        pytest.fail(f"the embedded {family} weights changed ({ref.FAMILIES[family].relative_to(ref.ROOT)}): "
                    f"regenerate the references with `{ref.COMMAND} {family}` and commit them with the weights")
    # bit-identical where the references were made (same CPU and libraries); float rounding only elsewhere
    exact = expected["environment"] == ref.environment()
    lines = differences(expected["outputs"], ref.OUTPUTS[family](), exact=exact)
    assert not lines, (f"{len(lines)} {family} outputs changed (references made with {expected['environment']}; "
                       f"now {ref.environment()}; compared {'bit for bit' if exact else 'within float rounding'}):\n"
                       + "\n".join(lines))


def test_differences_name_what_changed():
    """The comparison itself: a changed hash, a new and a vanished output are each reported."""
    base = {"a": ref.summary(np.zeros((4, 4, 3), np.uint8)), "b": ref.summary(np.ones(3, np.float32))}
    changed = dict(base, a=ref.summary(np.full((4, 4, 3), 2, np.uint8)), c=base["b"])
    del changed["b"]
    lines = differences(base, changed)
    assert lines[0].startswith("a: bytes differ;") and "by up to 2" in lines[0]
    assert lines[1] == "b: expected but no longer produced" and lines[2].startswith("c: produced but not")
    assert differences(base, dict(base)) == []
    rounded = dict(base, b=ref.summary(np.ones(3, np.float32) + np.float32(1e-5)))
    assert differences(base, rounded)[0].startswith("b: bytes differ;")  # bit for bit: any change counts
    assert differences(base, rounded, exact=False) == []                  # elsewhere: float rounding passes ...
    assert differences(base, changed, exact=False)[0].startswith("a: bytes differ;")  # ... a changed pixel does not
    holes = np.array([np.nan, 1.0, np.nan], np.float32)  # NaN = no estimate: where it stays NaN it agrees ...
    assert differences({"u": ref.summary(holes)}, {"u": ref.summary(holes + np.float32(1e-5))}, exact=False) == []
    moved = np.array([1.0, np.nan, np.nan], np.float32)  # ... a NaN that moves is a change, reported as inf
    assert "by up to inf" in differences({"u": ref.summary(holes)}, {"u": ref.summary(moved)}, exact=False)[0]


def test_changed_weights_are_named(tmp_path):
    """A weights hash covers every file's bytes and name."""
    (tmp_path / "w.bin").write_bytes(b"\0" * 8)
    first = ref.weights_hash(tmp_path)
    (tmp_path / "w.bin").write_bytes(b"\0" * 7 + b"\1")
    second = ref.weights_hash(tmp_path)
    (tmp_path / "w.bin").rename(tmp_path / "v.bin")
    assert len({first, second, ref.weights_hash(tmp_path)}) == 3
