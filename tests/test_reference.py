"""scripts/reference/deep_autoencoder.py on a tiny slice: its figures per seed and their mean, its
report, and a rerun that reuses the finished stacks. The reference numbers themselves come from the
full runs (runs/reference/deep-autoencoder*/)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = [sys.executable, str(ROOT / "scripts" / "reference" / "deep_autoencoder.py")]


def test_deep_autoencoder_script_reports_each_seed_and_reuses_finished_stacks(tmp_path):
    args = [*SCRIPT, "--rbm-epochs", "1", "--unroll-epochs", "1", "--train-size", "300",
            "--seeds", "0,1", "--logistic-pca-steps", "50", "--device", "cpu", "--quiet",
            "--out", str(tmp_path)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "results.json").read_text())
    rows, mean = record["per_seed"], record["squared_error_per_test_image"]
    assert [row["seed"] for row in rows] == [0, 1] and "autoencoder2" in rows[0]
    assert "autoencoder2" not in rows[1]  # the 2-unit code: the first seed's only
    assert all(row["pca30"] < row["pca2"] for row in rows)
    # logistic PCA, like the 2-unit code, is the first seed's only
    assert rows[0]["logistic_pca30"] < rows[0]["pca2"] and "logistic_pca30" not in rows[1]
    assert rows[0]["logistic_pca30_cross_entropy"]["test"] < 100
    assert rows[0]["pca30"] != rows[1]["pca30"]  # each seed's own split
    assert mean["pca30"] == pytest.approx(sum(row["pca30"] for row in rows) / 2)
    assert sorted(p.name for p in tmp_path.glob("stack-*")) == ["stack-2", "stack-30",
                                                                "stack-30-seed1"]
    assert (tmp_path / "figures" / "codes_2d.png").stat().st_size > 10_000
    report = (tmp_path / "REPORT.md").read_text()
    assert "mean ± sd over 2 seeds" in report and "--seeds 0,1" in report
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    rerun = json.loads((tmp_path / "results.json").read_text())["per_seed"]
    assert rerun == rows  # the same stacks, and the logistic PCA fits kept (their seconds too)
    assert [p.name for p in tmp_path.glob("logistic-pca-30-seed*.json")] == [
        "logistic-pca-30-seed0.json"]


@pytest.mark.parametrize("flag,value", [("--seeds", "0,x"), ("--logistic-pca-steps", "-5")])
def test_deep_autoencoder_script_refuses_bad_values_in_one_line(flag, value, tmp_path):
    r = subprocess.run([*SCRIPT, flag, value, "--out", str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and flag in r.stderr and f"'{value}'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not any(tmp_path.iterdir())


CONFIGS = sorted(p for p in (ROOT / "scripts" / "reference").glob("*.json")
                 if not p.name.endswith(".space.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_reference_config_is_a_valid_grid_and_its_space_a_valid_space(path):
    """run.sh's configs (and search spaces) load as this version reads them, so a renamed or
    retired setting cannot leave an experiment that fails only when someone runs it."""
    from stackae.config import from_dict
    from stackae.config_grid import AblateConfig
    cfg = from_dict(AblateConfig, AblateConfig.migrate(json.loads(path.read_text())))
    assert cfg.inits and cfg.seeds
    space = path.with_name(path.stem + ".space.json")
    if space.exists():
        pytest.importorskip("optuna")
        from stackae.space_read import distributions, read_space
        assert distributions(read_space(str(space)), cfg)
    header = (ROOT / "scripts" / "reference" / "run.sh").read_text().split("\nset -euo")[0]
    assert f"#   {path.stem} " in header  # run.sh says what the experiment is and what it costs


def test_headline_table_lists_finished_comparisons_and_names_running_tunings(tmp_path, monkeypatch,
                                                                               capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("headline",
                                                  ROOT / "scripts" / "reference" / "headline.py")
    headline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(headline)
    done = {"budgets": ["100"],
            "conditions": [{"init": "denoising", "budget": "100", "n": 2, "mean": 0.2, "std": 0.01},
                           {"init": "xavier", "budget": "100", "n": 2, "mean": 0.25, "std": None}],
            "comparisons": [{"arm": "denoising", "budget": "100", "mean_diff": -0.05,
                             "ci_low": -0.07, "ci_high": -0.03, "p_t_holm": 0.004,
                             "p_wilcoxon_holm": 0.5}]}
    for name, report in [("budgets", done), ("budgets-10k-tuned", {"in_progress": True})]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(report))
    monkeypatch.setattr(headline, "ROOT", tmp_path)
    assert headline.main() == 0
    out, err = capsys.readouterr()
    assert "| budgets | denoising | 100 | 2 | 20.00 ± 1.00 | -5.00 (-7.00 to -3.00) | 0.004 | 0.5 |" in out
    assert "| budgets | xavier | 100 | 2 | 25.00 | — | — | — |" in out
    assert "budgets-10k-tuned" not in out
    assert "tuning in progress (its REPORT.md has the trials so far): budgets-10k-tuned" in err
    assert "not yet run: classic," in err
