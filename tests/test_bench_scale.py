"""bench/bench_scale.py's arithmetic: the fitted exponent of cost against N, and its table."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench_scale", Path(__file__).resolve().parents[1] / "bench/bench_scale.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def point(n: int, power: float) -> dict:
    stages = {s: {"wall_s": 0.01 * n ** power + 0.001 * i, "peak_mb": 100.0 + n, "stage_s": 0.01 * n ** power,
                  "overhead_s": 0.001 * i + 2.0} for i, s in enumerate(bench.STAGES)}
    return {"songs": n, "duration_s": 20.0, "sample_rate": 16000, "channels": 1, "stages": stages,
            "total_s": sum(r["wall_s"] for r in stages.values())}


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_exponent_recovers_the_power_of_n(power):
    ns = [125, 250, 500, 1000]
    assert bench.exponent(ns, [3.0 * n ** power for n in ns]) == pytest.approx(power, abs=1e-3)
    fits = bench.fit([point(n, power) for n in ns])
    assert fits["score"]["stage"] == pytest.approx(power, abs=1e-3)
    assert fits["score"]["overhead"] == pytest.approx(0.0, abs=1e-3)  # constant start-up cost: exponent 0


def test_exponent_needs_two_sizes_and_positive_costs():
    assert bench.exponent([125], [1.0]) is None
    assert bench.exponent([125, 250], [0.0, 1.0]) is None


def test_table_has_a_row_per_stage_and_the_total():
    result = {"mono": [point(n, 1.0) for n in (125, 250)], "stereo": [], "exponents": bench.fit([point(n, 1.0) for n in (125, 250)])}
    table = bench.markdown(result).splitlines()
    rows = [line.split("|")[1].strip() for line in table if line.startswith("| ") and not line.startswith("| stage")]
    assert rows == [*bench.STAGES, "**total**"]
    assert "| 1.0 |" in next(line for line in table if line.startswith("| prepare |"))


def test_table_puts_the_reruns_beside_the_default_run():
    mono = [point(n, 1.0) for n in (125, 250)]
    mono[-1]["one_process"] = {s: {"wall_s": 2 * mono[-1]["stages"][s]["wall_s"]} for s in bench.AGAIN_STAGES}
    text = bench.markdown({"mono": mono, "stereo": [], "exponents": bench.fit(mono)})
    line = next(line for line in text.splitlines() if line.startswith("N=250, default vs one process"))
    s = mono[-1]["stages"]["score"]["wall_s"]
    assert f"score {s:.1f} s vs {2 * s:.1f} s" in line and "ray" not in line.lower()
