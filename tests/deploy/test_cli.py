"""`fp8port targets` and `fp8port plan`, through the real entry point."""

import json

import pytest

import fp8port.cli.main as cli_main


@pytest.fixture
def run(capsys):
    def call(*argv):
        rc = cli_main.main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    return call


def test_targets_text(run):
    rc, out, _ = run("targets")
    assert rc == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("H800"))
    assert "1,979 [DS]" in line and "400 [PR]" in line
    assert "Ascend 910C (x2)" in out and "[UNVERIFIED]" in out and "[EST]" in out


def test_targets_json(run):
    rc, out, _ = run("targets", "--json")
    chips = {c["name"]: c for c in json.loads(out)}
    assert rc == 0
    fp8 = chips["H100"]["throughput"]["fp8"]
    assert (fp8["value"], fp8["confidence"]) == (1979, "DS") and "datasheet" in fp8["source"]


def test_plan_text(run):
    rc, out, _ = run(
        "plan", "deepseek-v3", "--chip", "h800", "--preset", "bf16", "--preset", "mxfp4", "--compare", "910c", "950pr"
    )
    assert rc == 0
    assert "671,026,419,200 params" in out
    assert "comparison, preset mxfp4" in out
    rows = [ln for ln in out.splitlines() if ln.startswith("Ascend 950PR") and "fp4" in ln]
    assert rows and "native (fp4)" in rows[0]
    assert "emulated (bf16)" in out and "(memory)" in out


def test_plan_json_exact_bytes(run, tmp_path):
    rc, out, _ = run(
        "plan", "tiny-dense", "--chip", "H100", "--preset", "deepseek-v3", "--context", "100", "--batch", "3", "--json"
    )
    r = json.loads(out)
    assert rc == 0
    e = r["results"][0]
    assert e["weights"]["total"] == 2_411_392 and e["kv_cache"] == 153_600
    assert e["min_chips"] == 1 and e["execution"] == "native" and e["decode"]["bound"] in ("memory", "compute")


def test_plan_errors(run, tmp_path):
    rc, _, err = run("plan", "deepseek-v3", "--chip", "tpu9")
    assert rc == 2 and "unknown chip 'tpu9'" in err and "H800" in err
    rc, _, err = run("plan", "deepseek-v3", "--chip", "h800", "--preset", "fp3")
    assert rc == 2 and "unknown preset 'fp3'" in err and "bf16" in err
    (tmp_path / "config.json").write_text("{}")
    rc, _, err = run("plan", str(tmp_path), "--chip", "h800")
    assert rc == 2 and "lacks hidden_size" in err


def test_plan_unknown_figures_say_why(run):
    rc, out, _ = run("plan", "tiny-dense", "--chip", "p800", "--json")
    e = json.loads(out)["results"][0]
    assert rc == 0 and e["min_chips"] is None and "credible source" in e["decode"]["reason"]
