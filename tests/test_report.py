"""stackae report: numbers recomputed independently from results.csv, verdicts and warnings,
figures that are real PNGs, and a tiny ablate -> report run on a slice of real MNIST."""
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as S

from conftest import invoke
from stackae.cli import main
from stackae.config import to_dict
from stackae.grid import AblateConfig
from stackae.report import write_report
from stackae.stats import holm, min_wilcoxon_seeds

PNG = b"\x89PNG\r\n\x1a\n"
TINY_FLAGS = ["--layers", "16", "--train-size", "300", "--val-size", "200", "--device", "cpu",
              "--pretrain-epochs", "1", "--finetune-epochs", "2", "--min-epoch-examples", "300"]


def synthetic(folder: Path, effects: dict, seeds=range(8), budgets=("100", "1000", "all"),
              noise=0.004, train_errors=None, epochs=None):
    """An ablation folder written by hand: effects[(init, budget)] is the mean test error; a
    per-seed offset is shared by the arms of a seed (what pairing is for); train_errors[(init,
    budget)] is the training error at the last (selected) epoch, 0 where not given."""
    rng = np.random.default_rng(0)
    inits = sorted({i for i, _ in effects}, key=lambda i: i != "denoising")
    cells, lines = [], []
    for s in seeds:
        shared = rng.normal(0, 0.01)
        for init in inits:
            for b in budgets:
                cid = f"{init}-d2-n{b}-s{s}"
                err = float(effects[(init, b)] + shared + rng.normal(0, noise))
                n_epochs = epochs or 3 + (s % 2)  # uneven lengths, as with early stopping
                train = (train_errors or {}).get((init, b), 0.0)
                curves = {"val_error": list(np.linspace(err + 0.05, err, n_epochs)),
                          "train_error": list(np.linspace(train + 0.2, train, n_epochs))}
                (folder / "runs" / "finetune" / cid).mkdir(parents=True)
                (folder / "runs" / "finetune" / cid / "result.json").write_text(
                    json.dumps({"test_error": err, "curves": curves}))
                cells.append({"id": cid, "init": init, "depth": 2, "budget": b, "seed": s})
                lines.append({**cells[-1], "kind": "random" if init == "random" else "pretrained",
                              "labels": 50000 if b == "all" else int(b), "test_error": err,
                              "best_val_error": err, "best_epoch": n_epochs,
                              "epochs_run": n_epochs, "seconds": 1.0, "pretrain": None,
                              "folder": f"runs/finetune/{cid}"})
    (folder / "results.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    (folder / "grid.json").write_text(json.dumps({"cells": cells, "command": "stackae ablate",
                                                  "data": {}, "config": {}}))
    return folder


def read_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["test_error"], r["seed"] = float(r["test_error"]), int(r["seed"])
    return rows


def test_holm_known_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, None, 0.01]) == pytest.approx([0.5, None, 0.02])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.9, 0.02]) == pytest.approx([0.9, 0.04])


def test_results_csv_writes_float32_error_rates_as_their_shortest_decimal(tmp_path):
    from stackae.report import write_csv
    widened = float(np.float32(0.0123))  # how a float32 error rate reaches the record
    assert widened != 0.0123
    records = [{"id": "a", "test_error": widened, "best_val_error": 0.1 / 3, "seconds": 2.5},
               {"id": "b", "test_error": None, "best_val_error": widened}]
    write_csv(tmp_path / "r.csv", records)
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert rows[0]["test_error"] == "0.0123" and np.float32(rows[0]["test_error"]) == widened
    assert float(rows[0]["best_val_error"]) == 0.1 / 3  # a float64 keeps every digit
    assert rows[1]["test_error"] == "" and rows[1]["best_val_error"] == "0.0123"


def test_numbers_recomputed_from_results_csv(tmp_path):
    effects = {("denoising", "100"): 0.20, ("random", "100"): 0.30, ("denoising", "1000"): 0.08,
               ("random", "1000"): 0.085, ("denoising", "all"): 0.02, ("random", "all"): 0.02}
    folder = synthetic(tmp_path / "g", effects)
    rep = write_report(folder)
    rows = read_csv(folder / "results.csv")
    assert len(rows) == 8 * 2 * 3
    for c in rep["conditions"]:
        x = np.array([r["test_error"] for r in rows
                      if (r["init"], r["budget"]) == (c["init"], c["budget"])])
        half = S.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
        assert c["n"] == len(x) == 8
        assert c["mean"] == pytest.approx(x.mean()) and c["std"] == pytest.approx(x.std(ddof=1))
        assert (c["ci_low"], c["ci_high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    p_t, p_w = [], []
    for c in rep["comparisons"]:
        err = {(r["init"], r["seed"]): r["test_error"] for r in rows if r["budget"] == c["budget"]}
        a = np.array([err[("denoising", s)] for s in range(8)])
        b = np.array([err[("random", s)] for s in range(8)])
        d = a - b
        half = S.t.ppf(0.975, 7) * d.std(ddof=1) / np.sqrt(8)
        assert c["mean_diff"] == pytest.approx(d.mean())
        assert (c["ci_low"], c["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
        assert c["p_t"] == pytest.approx(S.ttest_rel(a, b).pvalue)
        assert c["p_wilcoxon"] == pytest.approx(S.wilcoxon(a, b).pvalue)
        p_t.append(c["p_t"])
        p_w.append(c["p_wilcoxon"])
    for key, ps in (("p_t_holm", p_t), ("p_wilcoxon_holm", p_w)):  # textbook Holm, written again
        order = np.argsort(ps)
        expect = np.empty(3)
        for rank, i in enumerate(order):
            expect[i] = min(1, max((3 - r) * ps[j] for r, j in enumerate(order[:rank + 1])))
        assert [c[key] for c in rep["comparisons"]] == pytest.approx(expect)
    by_budget = {c["budget"]: c for c in rep["comparisons"]}
    assert "significant after Holm" in by_budget["100"]["verdict"]
    assert "denoising has the lower test error" in by_budget["100"]["verdict"]
    assert "not significant" in by_budget["all"]["verdict"]
    text = (folder / "REPORT.md").read_text()
    assert "not significant" in text and "| 2 | 100 | denoising | 8 |" in text
    assert "cannot reach" not in text  # 8 seeds are enough for the Wilcoxon test


def test_too_few_seeds_are_warned(tmp_path):
    effects = {(i, "100"): 0.2 for i in ("denoising", "random")}
    rep = write_report(synthetic(tmp_path / "g", effects, seeds=range(2), budgets=("100",)))
    text = " ".join(rep["warnings"])
    assert "Wilcoxon signed-rank test cannot reach p < 0.05" in text
    assert "1 degree of freedom" in text
    assert "cannot reach" in (tmp_path / "g" / "REPORT.md").read_text()


def test_an_arm_that_has_not_fit_its_labels_is_warned(tmp_path):
    effects = {("denoising", "100"): 0.2, ("random", "100"): 0.6,
               ("denoising", "all"): 0.02, ("random", "all"): 0.03}
    rep = write_report(synthetic(tmp_path, effects, budgets=("100", "all"),
                                 train_errors={("random", "100"): 0.5, ("random", "all"): 0.09}))
    flagged = [w for w in rep["warnings"] if "had not fit its labelled set" in w]
    assert len(flagged) == 1  # 9% at all labels is under the 10% threshold
    assert flagged[0].startswith("random, 100 labels: training error at the selected epoch is "
                                 "50% (8 of 8 seeds chose their last epoch)")
    assert flagged[0] in (tmp_path / "REPORT.md").read_text()


def test_a_one_epoch_run_that_has_not_fit_is_warned_truly(tmp_path):
    """Epoch 1 of 1 is the last epoch (the warning says so) but no sign of still falling."""
    effects = {("denoising", "all"): 0.2, ("random", "all"): 0.3}
    rep = write_report(synthetic(tmp_path, effects, budgets=("all",), epochs=1,
                                 train_errors={("random", "all"): 0.5}))
    flagged = [w for w in rep["warnings"] if "epoch" in w]
    assert [w.split(":")[0] for w in flagged] == ["denoising, all labels", "random, all labels"]
    assert all("% (8 of 8 seeds chose their last epoch)" in w for w in flagged)  # it was "0 of 8"
    assert "is 70% (8 of" in flagged[1] and not any("still falling" in w for w in flagged)


def test_an_arm_still_improving_at_its_last_epoch_is_warned(tmp_path):
    """Every synthetic seed chooses its last epoch: still falling under a constant learning rate,
    converged under a cosine schedule (which ends near 0)."""
    effects = {("denoising", "all"): 0.02, ("random", "all"): 0.03}
    folder = synthetic(tmp_path / "constant", effects, budgets=("all",))
    flagged = [w for w in write_report(folder)["warnings"] if "still falling" in w]
    assert flagged == [f"{arm}, all labels: 8 of 8 seeds chose their last epoch, so validation "
                       f"error was still falling when fine-tuning stopped: more epochs may lower "
                       f"this arm's error and change any difference from it"
                       for arm in ("denoising", "random")]
    folder = synthetic(tmp_path / "cosine", effects, budgets=("all",))
    grid = json.loads((folder / "grid.json").read_text())
    grid["config"] = to_dict(AblateConfig(finetune_lr_schedule="cosine"))
    grid["data"] = {"train": 50000, "val": 10000, "test": 10000, "input_dim": 784, "classes": 10}
    (folder / "grid.json").write_text(json.dumps(grid))
    assert not [w for w in write_report(folder)["warnings"] if "still falling" in w]


@pytest.mark.parametrize("ratio, flagged", [(10, True), (2.1, True), (1.9, False)])
def test_a_seed_that_ended_apart_from_its_arm_is_warned(tmp_path, ratio, flagged):
    """One seed of an arm blew up (dbn-tuned-wide's xavier seed 2 ended at 12% beside 1.6-1.9%):
    warned when at least twice the other seeds' median and 2 points above it."""
    effects = {("denoising", "all"): 0.02, ("random", "all"): 0.03}
    folder = synthetic(tmp_path, effects, budgets=("all",), noise=0.0)
    lines = [json.loads(l) for l in (folder / "results.jsonl").read_text().splitlines()]
    others = sorted(l["best_val_error"] for l in lines if l["init"] == "random" and l["seed"] != 3)
    for l in lines:
        if l["id"] == "random-d2-nall-s3":
            l["best_val_error"] = l["test_error"] = ratio * others[len(others) // 2]
    (folder / "results.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    warned = [w for w in write_report(folder)["warnings"] if "ended apart" in w]
    assert len(warned) == flagged
    if flagged:
        assert warned[0].startswith("random, all labels: seed 3 ended apart from the arm's other "
                                    "seeds (best validation error ")
        assert warned[0] in (folder / "REPORT.md").read_text()


@pytest.mark.parametrize("family", [1, 2, 3, 4, 8])
def test_fewest_seeds_for_wilcoxon_match_scipy(family):
    """With every difference of one sign, scipy's exact Wilcoxon p is the smallest possible; after
    Holm over `family` budgets it first drops below 0.05 at min_wilcoxon_seeds(family) seeds."""
    def best_holm_p(n):
        return family * S.wilcoxon(np.arange(1, n + 1) * 0.01, method="exact").pvalue
    n = min_wilcoxon_seeds(family)
    assert best_holm_p(n) < 0.05 <= best_holm_p(n - 1)
    assert (n, family) in {(6, 1), (7, 2), (7, 3), (8, 4), (9, 8)}


def test_holm_family_in_the_warning(tmp_path):
    effects = {(i, b): 0.1 for i in ("denoising", "random") for b in ("100", "1000", "10000", "all")}
    rep = write_report(synthetic(tmp_path / "g", effects, seeds=range(6),
                                 budgets=("100", "1000", "10000", "all")))
    assert any("after Holm's correction across 4 label budgets" in w and "at least 8 seeds" in w
               for w in rep["warnings"])


def check_png(path: Path, min_side=200):
    from matplotlib.image import imread
    raw = path.read_bytes()
    assert raw[:8] == PNG and len(raw) > 1000, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4) and min(img.shape[:2]) >= min_side, img.shape
    return img


def test_figures_have_one_panel_per_budget_and_drawn_content(tmp_path, monkeypatch):
    import stackae.figures as F
    drawn = {}
    save = F._save
    monkeypatch.setattr(F, "_save", lambda fig, path: (drawn.__setitem__(Path(path).name, fig),
                                                       save(fig, path)))
    effects = {(i, b): 0.1 for i in ("denoising", "random", "xavier") for b in ("100", "all")}
    folder = synthetic(tmp_path / "g", effects, seeds=range(3), budgets=("100", "all"))
    rep = write_report(folder)
    assert rep["figures"] == ["figures/error_vs_budget.png", "figures/learning_curves.png",
                              "figures/per_seed.png"]  # no stack.pt here, so no filters
    for f in rep["figures"]:
        img = check_png(folder / f)
        ink = (img[..., :3] < 0.9).any(-1).mean()  # share of pixels that are not near-white
        assert ink > 0.01, (f, ink)
    panels = {name: [ax for ax in fig.axes if ax.has_data()] for name, fig in drawn.items()}
    assert len(panels["error_vs_budget.png"]) == 1  # one depth
    assert len(panels["learning_curves.png"]) == 2  # one panel per budget
    assert len(panels["per_seed.png"]) == 2
    for ax in panels["learning_curves.png"]:  # a curve per arm in every panel
        assert len([l for l in ax.get_lines() if len(l.get_xdata()) > 1]) >= 3


def test_report_of_a_folder_without_results_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(sys, "argv", ["stackae", "report", str(tmp_path / "empty")])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 1 and len(err.strip().splitlines()) == 1
    assert "has no results" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A real ablate -> report run through the CLI on a 300-image MNIST slice."""
    out = tmp_path_factory.mktemp("ablate") / "g"
    r = invoke("ablate", "--inits", "denoising,random", "--seeds", "0,1,2", "--labels", "20,all",
               *TINY_FLAGS, "-q", "--out", out)
    assert r.exit_code == 0, r.output
    return out, r.output


def test_tiny_ablate_ends_with_the_report(tiny):
    out, output = tiny
    for name in ("REPORT.md", "report.json", "results.csv", "grid.json", "config.json",
                 "results.jsonl"):
        assert (out / name).exists(), name
    assert "report:" in output and "20 labels:" in output
    rep = json.loads((out / "report.json").read_text())
    assert rep["cells"] == {"planned": 12, "finished": 12, "missing": []}
    assert len(rep["conditions"]) == 4 and len(rep["comparisons"]) == 2
    text = (out / "REPORT.md").read_text()
    for part in ("## Verdicts", "## Test error by condition", "## Paired differences",
                 "## Setup", "784-16-10", "stackae ablate --inits denoising,random --seeds 0,1,2 --labels 20,all",
                 "Ran on:** cpu", "--config",
                 "figures/filters.png", "cannot reach p < 0.05"):
        assert part in text, part
    for f in rep["figures"]:
        check_png(out / f, min_side=100)
    assert "figures/filters.png" in rep["figures"]
    assert len(read_csv(out / "results.csv")) == 12


def test_setup_names_the_fine_tuning_optimizer_as_run(tiny, tmp_path):
    """Momentum belongs to SGD only; a cosine schedule is said."""
    out, _ = tiny
    assert "sgd lr 0.1 (momentum 0.9), " in (out / "REPORT.md").read_text()
    copy = tmp_path / "g"
    shutil.copytree(out, copy)
    grid = json.loads((copy / "grid.json").read_text())
    grid["config"].update(finetune_optimizer="adam", finetune_lr=0.001,
                          finetune_lr_schedule="cosine")
    (copy / "grid.json").write_text(json.dumps(grid))
    write_report(copy)
    text = (copy / "REPORT.md").read_text()
    assert "adam lr 0.001, cosine decay to 0, " in text and "momentum" not in text


def test_cells_of_different_code_or_devices_are_warned_by_what_differs(tiny, tmp_path):
    out, _ = tiny
    copy = tmp_path / "g"
    shutil.copytree(out, copy)
    assert not [w for w in write_report(copy)["warnings"] if "cells ran with" in w]
    cells = sorted((copy / "runs" / "finetune").glob("*/config.json"))
    saved = json.loads(cells[0].read_text())
    saved["provenance"]["git_commit"] = "0" * 40  # one cell resumed after a commit
    cells[0].write_text(json.dumps(saved))
    warned = [w for w in write_report(copy)["warnings"] if "cells ran with" in w]
    assert warned == ["cells ran with different git commits (see Setup)"]
    saved["provenance"]["device"] = "cuda:0"
    cells[0].write_text(json.dumps(saved))
    text = (copy / "REPORT.md").read_text() if write_report(copy) else ""
    assert "cells ran with different devices, git commits (see Setup)" in text
    assert "**Ran on:** cuda:0" in text and "(1 cell)." in text


def test_the_filters_figure_outlives_the_stacks_it_was_drawn_from(tiny, tmp_path):
    out, _ = tiny
    copy = tmp_path / "g"
    shutil.copytree(out, copy)
    drawn = (copy / "figures" / "filters.png").read_bytes()
    for stack in (copy / "runs" / "pretrain").glob("*/stack.pt"):
        stack.unlink()  # as in a clone of committed results
    assert "figures/filters.png" in write_report(copy)["figures"]
    assert (copy / "figures" / "filters.png").read_bytes() == drawn
    assert "![filters](figures/filters.png)" in (copy / "REPORT.md").read_text()
    (copy / "figures" / "filters.png").unlink()  # nothing to draw it from, nothing drawn
    assert "figures/filters.png" not in write_report(copy)["figures"]
    assert "![filters]" not in (copy / "REPORT.md").read_text()


def test_report_reads_only_the_folder_and_is_repeatable(tiny):
    out, _ = tiny
    before = {n: (out / n).read_text() for n in ("REPORT.md", "report.json", "results.csv")}
    for n in before:
        (out / n).unlink()
    r = invoke("report", out)
    assert r.exit_code == 0, r.output
    assert {n: (out / n).read_text() for n in before} == before


def test_tensorboard_hparams_keyed_by_arm_seed_budget(tiny):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    out, _ = tiny
    keys = set()
    for cell in sorted((out / "runs" / "finetune").iterdir()):
        ea = EventAccumulator(str(cell)).Reload()
        content = ea.PluginTagToContent("hparams")
        info = [plugin_data_pb2.HParamsPluginData.FromString(v).session_start_info
                for v in content.values()]
        hp = [i for i in info if i.hparams][0].hparams
        keys.add(frozenset(hp))
        assert hp["arm"].string_value == cell.name.split("-")[0]
        assert hp["budget"].string_value == cell.name.split("-n")[1].split("-")[0]
        assert "finetune/val_error" in ea.Tags()["scalars"]
    assert len(keys) == 1  # identical keys in every cell
    assert {"arm", "seed", "budget", "depth", "labels"} <= set(next(iter(keys)))
