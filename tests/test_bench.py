"""scripts/bench.py --quick as a smoke check: it runs and writes its table as JSON. No timing is
asserted (speed targets live in the benchmark, not in tests)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_writes_every_part(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--device",
                        "cpu", "--stops", "--json", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert [l["layer"] for l in d["layers"]] == [1, 2, 3]
    for part in [*d["layers"], d["stack"], d["finetune"]]:
        for key in ("samples_per_s", "gflops", "ceiling_gflops", "textbook_samples_per_s"):
            assert part[key] > 0, (part, key)
    assert d["peak_rss_mb"] > 0 and d["examples"] == 6000
    assert "layer 1" in r.stdout and "finetune" in r.stdout
    assert [r["k"] for r in d["finetune_k"]] == [1, 4]  # fine-tuning against K networks at once
    assert all(r["samples_per_s"] > 0 and 0 < r["fraction_of_ceiling"] for r in d["finetune_k"])
    stops = d["stops"]  # 3 of 4 networks pruned after epoch 1 of 4: a quarter of the work after
    assert (stops["k"], stops["kept"], stops["work"]) == (4, 1, (1 + 3 / 4) / 4)
    assert stops["seconds_all"] > 0 and stops["seconds_pruned"] > 0 and "pruned after" in r.stdout


def test_bench_times_a_step_eager_against_compiled(tmp_path):
    out = tmp_path / "steps.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--device",
                        "cpu", "--steps", "16", "--ks", "2", "--steps-only", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(out.read_text())["steps"]
    assert (row["batch"], row["k"]) == (16, 2) and row["eager_ms"] > 0 and row["compiled_ms"] > 0
    assert "compiled" in r.stdout
