"""benchmarks/bench_codec.py runs and reports a ratio for every format (a smoke run, not a timed test)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_codec.py"


# ~25 s on 2 CPUs, under the 30 s line for @pytest.mark.slow.
def test_bench_codec_quick_json():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # progress went to stderr, so stdout is pure JSON
    env = report["environment"]
    assert env["elements"] == 1_000_000 and env["runs"] == 3 and env["numba_threads"] >= 1
    assert env["cpu_capability"]
    by_format = {}
    for r in report["results"]:
        by_format.setdefault(r["format"], []).append(r)
        assert r["ratios"]["reference/fast"] > 0
        library = "en_dtypes" if r["format"] == "hifloat8" else "ml_dtypes"
        assert r["ratios"][f"{library}/fast"] > 0
        assert r["bit_exact"], f"{r['format']} {r['input']}: fast, reference and {library} disagree"
        for t in r["impls"].values():
            assert 0 < t["min_ns_per_elem"] <= t["median_ns_per_elem"]
    assert set(by_format) == {
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
        "float6_e2m3fn",
        "float6_e3m2fn",
        "float4_e2m1fn",
        "hifloat8",
    }
    assert env["cpu_model"] and env["isa_tier"]  # every benchmark says which CPU and ISA tier it ran on
    assert all({r["input"] for r in rs} == {"float32-lognormal", "bf16-all"} for rs in by_format.values())
    assert "torch/fast" in by_format["float8_e4m3fn"][0]["ratios"]
