"""stackae tune: every arm gets the same trials, chosen on validation error alone; the test set is
read only by the final runs; an interrupted tuning resumes to the same choices."""
import json
import math
from pathlib import Path

import pytest

import stackae
from conftest import run_main
from stackae.report_tuning_text import settings_text

pytest.importorskip("optuna")

SMALL = dict(train_size=600, val_size=300, layers=(12,), seeds=(0, 1), labels=("100", "all"),
             pretrain_epochs=(1,), finetune_epochs=2, min_epoch_examples=0, device="cpu")
SPACE = {"finetune_lr": {"low": 0.01, "high": 1.0, "log": True}, "dropout": [0.0, 0.2]}


def trials(folder, budget):
    lines = (folder / "tune" / f"n{budget}" / "trials.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_tuning_gives_every_arm_the_same_budget_and_reads_test_once(tmp_path, capsys,
                                                                     monkeypatch):
    out = tmp_path / "t"
    grid = stackae.run_tuning(out=out, trials=3, space=SPACE, tune_seeds=(0,), quiet=True,
                              **SMALL)
    tuned = json.loads((out / "tune.json").read_text())
    for budget in ("100", "all"):
        recs = trials(out, budget)
        for arm in ("denoising", "xavier"):
            mine = [r for r in recs if r["arm"] == arm]
            assert [r["number"] for r in mine] == [0, 1, 2]  # the same number of trials
            best = min(mine, key=lambda r: (r["val_error"], r["number"]))
            assert tuned["choices"][arm][budget]["settings"] == best["settings"]
            for r in mine:  # a trial's cells never evaluated the test set
                res = json.loads((out / "tune" / f"n{budget}" / f"trial-{r['number']:03d}" /
                                  f"{arm}-d1-n{budget}-s0" / "result.json").read_text())
                assert res["test_error"] is None and "test_error" not in res["curves"]
                assert r["val_error"] == pytest.approx(res["best_val_error"])
            # every final cell ran with its arm's choice, and read the test set
            for seed in (0, 1):
                cell = out / "runs" / "finetune" / f"{arm}-d1-n{budget}-s{seed}"
                cfg = json.loads((cell / "config.json").read_text())
                assert cfg["lr"] == pytest.approx(best["settings"]["finetune_lr"])
                assert cfg["dropout"] == best["settings"]["dropout"]
                assert json.loads((cell / "result.json").read_text())["test_error"] is not None
            # the tuning seed's cell is the chosen trial's run, its test set read on its model
            cell = out / "runs" / "finetune" / f"{arm}-d1-n{budget}-s0"
            chosen = out / "tune" / f"n{budget}" / f"trial-{best['number']:03d}" / cell.name
            assert json.loads((cell / "copied.json").read_text()) == {"from": str(chosen)}
            res, model = stackae.Classifier(cell).result, stackae.Classifier(cell).model
            assert res["best_val_error"] == best["val_error"]
            d = stackae.load_data(train_size=600, val_size=300, seed=0)
            wrong = (model(d.test_x).argmax(1) != d.test_y).float().mean().item()
            assert res["test_error"] == pytest.approx(wrong)
            assert not (cell.with_name(cell.name[:-1] + "1") / "copied.json").exists()
    assert grid.finished and len(grid.records) == 8
    report = (out / "REPORT.md").read_text()
    assert "## Tuning (stackae tune)" in report and "3 trials at each label budget" in report
    assert "each trial fine-tuning seed 0 and judged on its validation error" in report
    assert "The tuning seeds' 4 cells are the chosen trials' own runs" in report
    assert "(a scrambled Sobol sequence over the space, the same points for every arm)" in report
    trial_runs = [r for b in ("100", "all") for t in sorted((out / "tune" / f"n{b}").glob("trial-*"))
                  for r in map(json.loads, (t / "results.jsonl").read_text().splitlines())]
    assert len(trial_runs) == 12  # 3 trials x 2 arms x 2 budgets x 1 seed: the search's cost
    compute = grid.report["tuning"]["compute"]
    assert {k: compute[k] for k in ("finetunes", "finetune_seconds", "pretrain_runs",
                                    "pretrain_seconds")} == {
        "finetunes": 12, "finetune_seconds": pytest.approx(sum(r["seconds"] for r in trial_runs)),
        "pretrain_runs": 0, "pretrain_seconds": 0}
    for arm in ("denoising", "xavier"):  # min_epoch_examples 0: an epoch is one pass
        mine = [r for r in trial_runs if r["init"] == arm]
        assert compute["per_arm"][arm]["finetunes"] == 6
        assert compute["per_arm"][arm]["finetune_example_passes"] == sum(
            r["epochs_run"] * r["labels"] for r in mine) == 3 * 2 * (100 + 600)
    assert "Tuning compute: 12 trial fine-tunes" in report
    trial = sorted((out / "tune" / "nall").glob("trial-*"))[0] / "results.jsonl"
    with open(trial, "a") as f:  # a line cut short by a kill is skipped, not a traceback
        f.write('{"id": "denoising-d1-nall-s0", "seconds": ')
    from stackae.report import write_report
    assert write_report(out)["tuning"]["compute"]["finetunes"] == 12
    assert grid.report["tuning"]["choices"] == tuned["choices"]
    plan = "\n".join(stackae.plan_tuning(out=out, resume=True))  # what is done is counted
    assert "progress: 12 of 12 trials, 8 of 8 cells and 2 of 2 final stacks finished" in plan, plan
    for budget in ("100", "all"):  # each arm's choice, as its best trial so far
        best = {arm: tuned["choices"][arm][budget] for arm in ("denoising", "xavier")}
        assert (f"best so far at {budget} labels: denoising "
                f"{100 * best['denoising']['val_error']:.2f}% (trial "
                f"{best['denoising']['trial'] + 1} of 3 finished: finetune_lr ") in plan, plan
    code, _, err = run_main(["ablate", "--out", out, "--resume", "--dry-run"], capsys,
                            monkeypatch)  # its plan too: the real run would refuse the folder
    assert code == 2 and "holds a `stackae tune` run" in err, err
    (out / "results.jsonl").rename(out / "kept.jsonl")  # as while its trials still run
    code, stdout, err = run_main(["report", out], capsys, monkeypatch)
    assert code == 0, err  # a report of the trials so far, reading no test error
    progress = json.loads((out / "report.json").read_text())
    assert progress["in_progress"] and "conditions" not in progress
    assert progress["finished_trials"] == {b: {"denoising": 3, "xavier": 3}
                                           for b in ("100", "all")}
    text = (out / "REPORT.md").read_text()
    assert text.startswith("# Tuning in progress: denoising, xavier")
    assert "12 of 12 trials finished" in text and "No test error has been read" in text
    assert "![tuning](figures/tuning.png)" in text and (out / "figures" / "tuning.png").exists()
    for arm in ("denoising", "xavier"):
        for budget in ("100", "all"):
            best = tuned["choices"][arm][budget]  # the best so far is what was chosen
            assert progress["tuning"]["best_so_far"][arm][budget]["trial"] == best["trial"]
            assert (f"| {arm} | {budget} | 3 of 3 | {settings_text(best['settings'])} | "
                    f"{100 * best['val_error']:.2f} | {best['trial'] + 1} |") in text
            assert (f"{arm:>12} {budget:>6} labels: chosen trial {best['trial'] + 1} of 3, "
                    f"validation error {100 * best['val_error']:.2f}% (final cells not run "
                    f"yet)") in stdout  # every trial finished: the best are the choices
    assert "## Choices" in text and "every trial has finished" in text
    assert text.count("| denoising |") == 2 + 6  # the choice per budget, then every trial
    lines = (out / "tune" / "nall" / "trials.jsonl").read_text().splitlines()
    (out / "tune" / "nall" / "trials.jsonl").write_text("\n".join(lines[:-2]) + "\n")
    code, stdout, err = run_main(["report", out], capsys, monkeypatch)  # trial 3 at all: running
    assert code == 0, err
    assert "## Best so far" in (out / "REPORT.md").read_text()
    assert "   xavier    all labels: best validation error so far " in stdout
    assert "(trial " in stdout and "; 2 of 3 trials finished)" in stdout, stdout
    (out / "tune" / "nall" / "trials.jsonl").write_text("\n".join(lines) + "\n")
    (out / "config.json").rename(out / "config.kept")  # its settings lost: one line, no traceback
    code, _, err = run_main(["report", out], capsys, monkeypatch)
    assert code == 1 and "is a tuning whose settings cannot be read" in err, err
    assert len(err.strip().splitlines()) == 1
    (out / "config.kept").rename(out / "config.json")
    kept = sorted((out / "tune").glob("n*/trials.jsonl"))
    for t in kept:
        t.rename(t.with_name("kept.jsonl"))
    code, _, err = run_main(["report", out], capsys, monkeypatch)  # before any trial finished
    assert code == 1 and "is a tuning with no finished trial yet" in err, err
    for t in kept:
        t.with_name("kept.jsonl").rename(t)
    (out / "kept.jsonl").rename(out / "results.jsonl")
    # a damaged tune.json is one line naming it, on a resume and in a report
    bad_space = json.dumps({**tuned, "space": {"finetune_lr": "x"}})
    for damaged in ('{"space": ', "[]", bad_space):
        (out / "tune.json").write_text(damaged)
        for command in (["tune", "--out", out, "--resume", "--dry-run"], ["report", out]):
            code, _, err = run_main(command, capsys, monkeypatch)
            if damaged == bad_space:  # readable; a resume refuses its space, naming the file
                assert code == (1 if command[0] == "tune" else 0), err
                if command[0] == "tune":
                    assert "tune.json: its space is not valid for this grid" in err, err
                continue
            assert code == 1 and "tune.json is damaged" in err, err
            assert len(err.strip().splitlines()) == 1


def test_a_dry_run_counts_the_trials_runs_and_work_and_writes_nothing(tmp_path, capsys,
                                                                       monkeypatch):
    space = {**SPACE, "pretrain_epochs": [1, 3]}
    plan = "\n".join(stackae.plan_tuning(out=tmp_path / "t", trials=3, space=space,
                                         tune_seeds=(0,), **SMALL))
    assert not (tmp_path / "t").exists()
    assert "3 per arm and budget" in plan and "all first: it tunes the pretraining" in plan
    # 2 arms x 2 budgets x 3 trials x 1 tuning seed; denoising's 3 trials at all labels pretrain
    assert "trial runs: 12 fine-tunes; pretraining: 3 stacks" in plan, plan
    # each trial's stack: one layer, 1 to 3 epochs over the 600 training images
    assert "work (trials, whole): pretraining 1,800 to 5,400 example-passes" in plan, plan
    assert "pretrain_epochs: one of 1, 3  [pretrained arm (denoising), at all labels]" in plan
    assert "progress: 0 of 12 trials, 0 of 8 cells and 0 of 2 final stacks finished" in plan
    code, out, _ = run_main(["tune", "--train-size", "600", "--val-size", "300", "--layers", "12",
                             "--seeds", "0,1", "--trials", "2", "--device", "cpu", "--dry-run",
                             "--prune-after", "3", "--out", tmp_path / "c"], capsys, monkeypatch)
    assert code == 0 and out.startswith("tuning plan for") and "finetune_lr: 0.01 to 1.0" in out
    assert "pruning: from epoch 3," in out and "--prune-after 3" in out
    # 2 arms x 2 budgets (100 and all: 600 images leave no room for 1000 or 10000) x 2 x 2 seeds
    assert "trial runs: 16 fine-tunes" in out and "work (trials, whole): pretraining none" in out, out
    assert not (tmp_path / "c").exists()


def test_a_tuning_without_out_goes_under_runs_tune_like_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = stackae.plan_tuning(trials=2, space=SPACE, tune_seeds=(0,), **SMALL)[0]
    assert first.startswith(f"tuning plan for {Path('runs') / 'tune'}"), first


def test_arms_whose_proposals_differ_in_lr_and_dropout_train_as_one_k(tmp_path, monkeypatch):
    import stackae.ablate as A
    import stackae.tune as T
    real_jobs, real_cells, calls, proposed = A.run_jobs, A.run_cells, [], []

    def varied(*args, **kw):  # the arms' first proposals are equal (a shared start): vary them
        proposed.append(1)
        return {**real_propose(*args, **kw), "dropout": (0.0, 0.2)[len(proposed) % 2]}
    real_propose = T.propose
    monkeypatch.setattr(T, "propose", varied)

    def trial_run(cfg, jobs, *args, **kwargs):
        if kwargs.get("read_test") is False:  # a trial's (the final runs' come through run_cells)
            calls.append(({j.folder.parent.name for j in jobs},
                          {j.cell.init: dict(j.settings) for j in jobs}))
        return real_jobs(cfg, jobs, *args, **kwargs)

    def final_run(cfg, out, cells, *args, per_arm=None, **kwargs):
        calls.append(("final", per_arm))
        return real_cells(cfg, out, cells, *args, per_arm=per_arm, **kwargs)
    monkeypatch.setattr(A, "run_jobs", trial_run)
    monkeypatch.setattr(A, "run_cells", final_run)
    stackae.run_tuning(out=tmp_path / "t", trials=3, space=SPACE, tune_seeds=(0,), quiet=True,
                       **{**SMALL, "labels": ("100",)})
    assert [name for name, _ in calls[:3]] == [{"trial-000"}, {"trial-001"}, {"trial-002"}]
    assert calls[3][0] == "final" and len(calls) == 4
    for names, per_arm in calls[:3]:  # one loop per trial, each arm with its own proposal
        assert set(per_arm) == {"denoising", "xavier"}
        assert per_arm["denoising"]["dropout"] != per_arm["xavier"]["dropout"]
        (name,) = names
        for arm in per_arm:
            cell = tmp_path / "t" / "tune" / "n100" / name / f"{arm}-d1-n100-s0"
            cfg = json.loads((cell / "config.json").read_text())
            assert (cfg["lr"], cfg["dropout"]) == (per_arm[arm]["finetune_lr"],
                                                   per_arm[arm]["dropout"])
    per_arm = calls[3][1]  # the final runs: one loop for both arms, each with its choice
    for arm in ("denoising", "xavier"):
        cfg = json.loads((tmp_path / "t" / "runs" / "finetune" / f"{arm}-d1-n100-s1" /
                          "config.json").read_text())
        assert (cfg["lr"], cfg["dropout"]) == (per_arm[arm]["finetune_lr"],
                                               per_arm[arm]["dropout"])


def test_trials_at_once_train_as_one_k_and_resume_to_the_same_choices(tmp_path, monkeypatch):
    import stackae.ablate as A
    real, calls = A.run_jobs, []

    def counted(cfg, jobs, *args, **kwargs):
        if kwargs.get("read_test") is False:  # a round's loop (not the final runs')
            calls.append(sorted({j.folder.parent.name for j in jobs}))
            if len(calls) == 2 and dies:
                raise KeyboardInterrupt
        return real(cfg, jobs, *args, **kwargs)
    monkeypatch.setattr(A, "run_jobs", counted)
    dies = False
    whole = tmp_path / "whole"
    stackae.run_tuning(out=whole, trials=5, trials_at_once=2, space=SPACE, tune_seeds=(0,),
                       quiet=True, **{**SMALL, "labels": ("all",)})
    # rounds of two trials (the last of one), every arm of a round in one loop
    assert calls == [["trial-000", "trial-001"], ["trial-002", "trial-003"], ["trial-004"]]
    recs = trials(whole, "all")
    assert sorted((r["arm"], r["number"]) for r in recs) == sorted(
        (a, n) for a in ("denoising", "xavier") for n in range(5))
    for r in recs:  # each trial of the round in its own folder, with its own settings
        cell = whole / "tune" / "nall" / f"trial-{r['number']:03d}" / f"{r['arm']}-d1-nall-s0"
        cfg = json.loads((cell / "config.json").read_text())
        assert (cfg["lr"], cfg["dropout"]) == (r["settings"]["finetune_lr"],
                                               r["settings"]["dropout"])
        assert r["val_error"] == json.loads((cell / "result.json").read_text())["best_val_error"]
    assert json.loads((whole / "tune.json").read_text())["trials_at_once"] == 2
    assert {r["proposed_by"] for r in recs} == {"sobol"}  # the first 10 trials: Sobol points
    calls.clear()
    dies = True  # killed in the second round: resumes to the same trials and choices
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        stackae.run_tuning(out=cut, trials=5, trials_at_once=2, space=SPACE, tune_seeds=(0,),
                           quiet=True, **{**SMALL, "labels": ("all",)})
    dies = False
    stackae.run_tuning(out=cut, resume=True, quiet=True)
    assert sorted(map(json.dumps, trials(cut, "all"))) == sorted(map(json.dumps, recs))
    assert json.loads((cut / "tune.json").read_text())["choices"] == \
        json.loads((whole / "tune.json").read_text())["choices"]
    with pytest.raises(stackae.ConfigError, match="differs from the tuning being resumed"):
        stackae.run_tuning(out=cut, resume=True, trials_at_once=1, quiet=True)


def test_the_first_trials_cover_each_range_evenly_and_every_arm_draws_the_same():
    from stackae.config_grid import AblateConfig
    from stackae.proposals import STARTUP, propose
    from stackae.space import arm_space
    from stackae.space_read import distributions
    cfg = AblateConfig(inits=("denoising", "xavier"), layers=(12, 12))
    dists = distributions({"finetune_lr": {"low": 0.01, "high": 1.0, "log": True},
                           "finetune_batch_size": {"low": 10, "high": 40, "step": 10},
                           "dropout": [0.0, 0.2], "noise": [[0.1, 0.2], [0.3]]}, cfg)
    first = [propose(dists, [], n, 0) for n in range(4)]
    # one learning rate in each quarter of the log range, each batch size once, each value twice
    assert sorted(int((math.log10(p["finetune_lr"]) + 2) * 2) for p in first) == [0, 1, 2, 3]
    assert sorted(p["finetune_batch_size"] for p in first) == [10, 20, 30, 40]
    assert sorted(p["dropout"] for p in first) == [0.0, 0.0, 0.2, 0.2]
    assert sorted(map(str, (p["noise"] for p in first))) == ["[0.1, 0.2]"] * 2 + ["[0.3]"] * 2
    for n, p in enumerate(first):  # a random-init arm draws no pretraining, and the same rest
        mine = propose(arm_space(dists, "xavier", True), [], n, 0, whole=dists)
        assert mine == {k: v for k, v in p.items() if k != "noise"}
    assert propose(dists, [], 1, 1) != first[1]  # another seed, other points
    done = [{"settings": propose(dists, [], n, 0), "val_error": 0.1 + n / 100}
            for n in range(STARTUP)]  # then TPE, from the finished trials
    later = propose(dists, done, STARTUP, 0)
    assert 0.01 <= later["finetune_lr"] <= 1.0 and later not in [d["settings"] for d in done]


def test_tpe_ranks_a_pruned_trial_after_every_trial_that_ran_its_course():
    from stackae.config_grid import AblateConfig
    from stackae.proposals import STARTUP, propose
    from stackae.space_read import distributions
    dists = distributions({"finetune_lr": {"low": 0.01, "high": 1.0, "log": True}},
                          AblateConfig(inits=("xavier",), layers=(12,)))
    done = [{"settings": {"finetune_lr": 0.8 + n / 100}, "val_error": 0.3 + n / 100}
            for n in range(STARTUP)]  # trials that ran their course, all near lr 0.8
    cut = {"settings": {"finetune_lr": 0.012}, "val_error": 0.05, "pruned": True}
    told = [propose(dists, done + [cut], n, 0)["finetune_lr"]
            for n in range(STARTUP + 1, STARTUP + 6)]
    assert min(told) > 0.1, told  # the pruned trial's low score, cut short, does not lead
    as_finished = [propose(dists, done + [{k: v for k, v in cut.items() if k != "pruned"}], n,
                           0)["finetune_lr"] for n in range(STARTUP + 1, STARTUP + 6)]
    assert max(as_finished) < 0.05, as_finished  # as a finished trial's, it would


def test_a_setting_may_give_each_arm_its_own_range_at_the_same_points(tmp_path):
    from stackae.proposals import at_edge, propose
    from stackae.space import arm_space, arm_view
    from stackae.space_read import distributions
    lr = {"denoising": {"low": 0.1, "high": 1.0, "log": True},
          "xavier": {"low": 0.001, "high": 0.01, "log": True}}
    space = {"finetune_lr": lr, "dropout": [0.0, 0.2], "noise": {"denoising": [[0.1], [0.3]]}}
    cfg = stackae.AblateConfig(inits=("denoising", "xavier"), layers=(12,))
    dists = distributions(space, cfg)

    def first(arm):
        return [propose(arm_space(dists, arm, True), [], n, 0, whole=arm_view(dists, arm))
                for n in range(4)]
    den, xav = first("denoising"), first("xavier")
    # one rate in each quarter of each arm's own log range, at the same point of it
    assert sorted(int((math.log10(p["finetune_lr"]) + 1) * 4) for p in den) == [0, 1, 2, 3]
    for d, x in zip(den, xav):
        assert math.log10(x["finetune_lr"]) == pytest.approx(math.log10(d["finetune_lr"]) - 2)
        assert d["dropout"] == x["dropout"] and "noise" not in x and d["noise"] in ([0.1], [0.3])
    choices = {"denoising": {"all": {"settings": {"finetune_lr": 0.9}}},
               "xavier": {"all": {"settings": {"finetune_lr": 0.009}}}}
    assert at_edge(space, choices) == [
        f"{arm} chose finetune_lr {v} at all labels, in the top tenth of its search range "
        f"({low} to {high}, log, {arm}'s own): the best may lie beyond it; widen the range"
        for arm, v, low, high in (("denoising", 0.9, 0.1, 1), ("xavier", 0.009, 0.001, 0.01))]
    assert at_edge(space, choices, so_far=True)[0].startswith(  # a running tuning's words
        "the best trial so far of denoising has finetune_lr 0.9 at all labels, in the top tenth")
    out = tmp_path / "t"  # a whole tuning: each arm's trials and choice in its own range
    stackae.run_tuning(out=out, trials=2, space={"finetune_lr": lr}, tune_seeds=(0,), quiet=True,
                       **{**SMALL, "labels": ("all",)})
    for r in trials(out, "all"):
        low, high = lr[r["arm"]]["low"], lr[r["arm"]]["high"]
        assert low <= r["settings"]["finetune_lr"] <= high
    report = (out / "REPORT.md").read_text()
    assert ("Search space: `finetune_lr` 0.1 to 1 (log) for denoising and 0.001 to 0.01 (log) "
            "for xavier." in report)
    assert "the same points for every arm, each in its own ranges" in report
    plan = "\n".join(stackae.plan_tuning(out=out, resume=True))
    assert ("finetune_lr: denoising 0.1 to 1.0, log scale; xavier 0.001 to 0.01, log scale  "
            "[every arm, at every budget]") in plan, plan


def test_a_plan_sizes_a_setting_given_per_arm_from_every_arms_fewest_to_most():
    from stackae.tune_plan import described, ends
    assert ends({"rbm": {"low": 10, "high": 30}, "xavier": [5, 20]}) == (5, 30)
    # per layer, by the sum over the layers, one value standing for each
    assert ends({"rbm": [[1, 2], [4]], "xavier": [[2]]}, layers=2) == ([1, 2], [4])
    assert ends([[3, 3], [4]], layers=2) == ([3, 3], [4]) and ends([[5], [1, 1, 1]], 3) == (
        [1, 1, 1], [5])
    assert ends([5, [1, 2, 3]], layers=3) == ([1, 2, 3], 5)  # 5 stands for 15 epochs
    assert described({"rbm": [5, 20], "xavier": {"low": 1, "high": 9, "step": 2}}) == \
        "rbm one of 5, 20; xavier 1 to 9, step 2"


def test_a_tuning_from_before_the_sobol_start_resumes_with_random_draws(tmp_path):
    from stackae.config_grid import AblateConfig
    from stackae.report_tuning_text import sampler_text
    from stackae.tune_setup import setup
    cfg = AblateConfig(inits=("denoising", "xavier"), layers=(12,), seeds=(0, 1))
    new = setup(cfg, tmp_path / "new", False, SPACE, 3, None)
    assert new["startup"] == "sobol"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "tune.json").write_text(json.dumps(
        {"space": SPACE, "trials": 3, "tune_seeds": [0, 1], "trials_at_once": 1}))
    old = setup(cfg, tmp_path / "old", True, None, None, None)
    assert old["startup"] == "random"
    import optuna

    from stackae.proposals import proposer  # recorded per trial: TPE's proposals vary by version
    assert [proposer(n, "sobol") for n in (0, 9, 10)] == [
        "sobol", "sobol", f"tpe (optuna {optuna.__version__})"]
    assert proposer(0, "random") == f"random (optuna {optuna.__version__})"
    history = {"100": [{"proposed_by": "sobol"}, {"proposed_by": "tpe (optuna 5.1.0)"}]}
    assert sampler_text({**new, "trials": 12, "history": history}).endswith(
        "then Optuna 5.1.0's TPE sampler")
    assert sampler_text(old) == "Optuna's TPE sampler, whose first 10 trials are random draws"
    assert "then Optuna's TPE sampler" in sampler_text({**new, "trials": 12})


def test_a_choice_at_the_edge_of_its_range_is_warned_of():
    from stackae.proposals import at_edge
    space = {**SPACE, "finetune_epochs": {"low": 10, "high": 110}}
    choices = {"rbm": {"all": {"settings": {"finetune_lr": 0.7, "dropout": 0.2,
                                            "finetune_epochs": 60}}},
               "xavier": {"all": {"settings": {"finetune_lr": 0.7, "finetune_epochs": 12}},
                          "100": {"settings": {"finetune_lr": 0.3, "finetune_epochs": 60}}}}
    assert at_edge(space, choices) == [  # 0.7 is 92% of the way up 0.01 to 1 on the log scale
        "rbm and xavier chose finetune_lr 0.7 at all labels, in the top tenth of its search range "
        "(0.01 to 1, log): the best may lie beyond it; widen the range",
        "xavier chose finetune_epochs 12 at all labels, in the bottom tenth of its search range "
        "(10 to 110): the best may lie beyond it; widen the range"]


def test_an_interrupted_tuning_resumes_to_the_same_choices(tmp_path, monkeypatch, capsys):
    import stackae.ablate as A
    whole = tmp_path / "whole"
    stackae.run_tuning(out=whole, trials=3, space=SPACE, tune_seeds=(0, 1), quiet=True, **SMALL)
    real, calls = A.run_jobs, []

    def dies_on_the_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(A, "run_jobs", dies_on_the_fourth)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        stackae.run_tuning(out=cut, trials=3, space=SPACE, tune_seeds=(0, 1), quiet=True,
                           **SMALL)
    monkeypatch.setattr(A, "run_jobs", real)
    assert not (cut / "REPORT.md").exists()
    before = {b: len(trials(cut, b)) if (cut / "tune" / f"n{b}" / "trials.jsonl").exists() else 0
              for b in ("100", "all")}
    capsys.readouterr()
    stackae.run_tuning(out=cut, resume=True)  # the folder's settings and space
    said = capsys.readouterr().err.splitlines()
    started = [line for line in said if " started (" in line]
    ended = [line for line in said if "best so far" in line]
    # each trial left says when it starts (a trial may run for long) and when it ends
    assert len(started) == len(ended) == 12 - sum(before.values()) > 0, said
    budget = next(b for b in ("100", "all") if before[b] < 6)  # where it stopped
    assert started[0].startswith(f"tune denoising at {budget} labels: trial "
                                 f"{before[budget] // 2 + 1}/3 started (finetune_lr "), said
    for budget in ("100", "all"):
        def key(r):
            return (r["arm"], r["number"])
        assert sorted(map(json.dumps, sorted(trials(cut, budget), key=key))) == \
            sorted(map(json.dumps, sorted(trials(whole, budget), key=key)))
    assert json.loads((cut / "tune.json").read_text())["choices"] == \
        json.loads((whole / "tune.json").read_text())["choices"]
    with pytest.raises(stackae.ConfigError, match="differs from the tuning being resumed"):
        stackae.run_tuning(out=cut, resume=True, trials=5, quiet=True)


def test_pretraining_settings_are_tuned_at_the_largest_budget_with_stacks_of_their_own(tmp_path):
    out = tmp_path / "t"
    space = {"finetune_lr": [0.05, 0.5], "pretrain_lr": {"low": 1e-4, "high": 1e-2, "log": True},
             "noise": [[0.1], 0.4]}  # one number for a per-layer setting: every layer
    stackae.run_tuning(out=out, trials=3, space=space, tune_seeds=(0,), quiet=True, **SMALL)
    tuned = json.loads((out / "tune.json").read_text())
    assert tuned["pretrain_budget"] == "all"
    chosen = tuned["choices"]["denoising"]["all"]["settings"]
    pre = {"pretrain_lr": chosen["pretrain_lr"], "noise": chosen["noise"]}
    layered = {"pretrain_lr": [pre["pretrain_lr"]],
               "noise": pre["noise"] if isinstance(pre["noise"], list) else [pre["noise"]]}

    def stack_settings(folder):
        cfg = json.loads((folder / "config.json").read_text())
        return {"pretrain_lr": cfg["lr"], "noise": cfg["noise"]}
    for r in trials(out, "all"):  # each trial of the pretrained arm pretrained its own stack
        trial = out / "tune" / "nall" / f"trial-{r['number']:03d}"
        if r["arm"] == "xavier":  # a random-init arm draws fine-tuning settings only
            assert set(r["settings"]) == {"finetune_lr"}
            continue
        assert set(r["settings"]) == set(space)
        stack = trial / "pretrain" / "denoising-d1-s0"
        assert stack_settings(stack) == {"pretrain_lr": [r["settings"]["pretrain_lr"]],
                                         "noise": [0.4] if r["settings"]["noise"] == 0.4
                                         else r["settings"]["noise"]}
        cell = json.loads((trial / "denoising-d1-nall-s0" / "config.json").read_text())
        assert cell["init"] == str(stack / "stack.pt")
    assert len([r for r in trials(out, "all") if r["arm"] == "xavier"]) == 3
    # the other budget tunes fine-tuning alone, from the stacks of the pretraining chosen above
    assert all(set(r["settings"]) == {"finetune_lr"} for r in trials(out, "100"))
    assert tuned["choices"]["denoising"]["100"]["settings"] == {
        **pre, "finetune_lr": tuned["choices"]["denoising"]["100"]["settings"]["finetune_lr"]}
    for seed in (0, 1):  # every final cell of both budgets starts from a stack pretrained so
        stack = out / "runs" / "pretrain" / f"denoising-d1-s{seed}"
        assert stack_settings(stack) == layered
        for budget in ("100", "all"):
            cell = json.loads((out / "runs" / "finetune" / f"denoising-d1-n{budget}-s{seed}" /
                               "config.json").read_text())
            assert cell["init"] == str(stack / "stack.pt")
    best = tuned["choices"]["denoising"]["all"]["trial"]  # the chosen trial's stack, reused
    assert (out / "runs" / "pretrain" / "denoising-d1-s0" / "stack.pt").read_bytes() == (
        out / "tune" / "nall" / f"trial-{best:03d}" / "pretrain" / "denoising-d1-s0" /
        "stack.pt").read_bytes()
    report = (out / "REPORT.md").read_text()
    assert "Pretraining settings were tuned at the all-label budget" in report
    plan = "\n".join(stackae.plan_tuning(out=out, resume=True))  # what is adopted, said truly
    assert "not trained again, but for denoising at all labels, whose trials " \
        "started from stacks of their own" in plan
    # the 3 trials at all labels pretrained a stack each; the 100-label trials reused those
    assert "; 3 trial pretraining runs, " in report


def test_an_arm_that_reads_no_tuned_pretraining_setting_trains_from_the_grids_stacks(tmp_path):
    out = tmp_path / "t"  # noise moves denoising layers only: the RBM arm draws no pretraining
    space = {"finetune_lr": [0.05, 0.5], "noise": [[0.1], [0.4]]}
    small = {**SMALL, "inits": ("denoising", "rbm", "xavier"), "labels": ("all",)}
    plan = "\n".join(stackae.plan_tuning(out=out, trials=2, space=space, tune_seeds=(0,), **small))
    assert "noise: one of [0.1], [0.4]  [pretrained arm (denoising), at all labels]" in plan
    assert ("pretraining: 2 stacks, each trial of denoising at all labels its own; 1 of the "
            "grid's for rbm (which draws no pretraining setting), pretrained once") in plan, plan
    assert "work (trials, whole): pretraining 1,800 example-passes" in plan  # 3 one-layer stacks
    # of the 6 final cells, only denoising's of seed 0 trains again beside seed 1's 3: 4 x 2 x 600
    assert "work (final, whole): pretraining 1,200 example-passes (~0.00014 TFLOP); fine-tuning " \
        "4,800 example-passes" in plan, plan
    stackae.run_tuning(out=out, trials=2, space=space, tune_seeds=(0,), quiet=True, **small)
    grid_stack = out / "runs" / "pretrain" / "rbm-d1-s0"
    for r in trials(out, "all"):
        trial = out / "tune" / "nall" / f"trial-{r['number']:03d}"
        assert set(r["settings"]) == ({"finetune_lr", "noise"} if r["arm"] == "denoising"
                                      else {"finetune_lr"})
        assert [p.name for p in (trial / "pretrain").glob("[!.]*")] == ["denoising-d1-s0"]
        if r["arm"] == "rbm":
            cell = json.loads((trial / "rbm-d1-nall-s0" / "config.json").read_text())
            assert cell["init"] == str(grid_stack / "stack.pt")
    for seed in (0, 1):  # the grid's noise, not a denoising trial's, in every RBM stack
        stack = json.loads((out / "runs" / "pretrain" / f"rbm-d1-s{seed}" / "config.json")
                           .read_text())
        assert stack["noise"] == [0.25] and stack["objective"] == ["rbm"]
    # the tuning seed's RBM cell is its chosen trial's run, from the same stack file
    assert (out / "runs" / "finetune" / "rbm-d1-nall-s0" / "copied.json").exists()
    assert not (out / "runs" / "finetune" / "denoising-d1-nall-s0" / "copied.json").exists()
    assert "drawn by the pretrained arms whose layers read it (`noise` by denoising)" in (
        out / "REPORT.md").read_text()


def test_each_arm_takes_only_its_own_stacks_from_its_chosen_trial(tmp_path):
    from stackae.tune import reuse_stacks
    trial = tmp_path / "tune" / "nall" / "trial-001" / "pretrain"
    for name in ("denoising-d1-s0", "rbm-d1-s0"):
        (trial / name).mkdir(parents=True)
        (trial / name / "stack.pt").write_bytes(name.encode())
    reuse_stacks(trial, tmp_path, "denoising")  # rbm chose another trial: not this one's stack
    assert sorted(p.name for p in (tmp_path / "runs" / "pretrain").iterdir()) == [
        "denoising-d1-s0"]


def test_a_tuning_interrupted_after_choosing_the_pretraining_resumes(tmp_path, monkeypatch):
    import stackae.ablate as A
    import stackae.tune as T
    real, calls = A.run_cells, []

    def dies_in_the_final_runs(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(A, "run_cells", dies_in_the_final_runs)
    out = tmp_path / "t"  # both values differ from the grid's pretraining rate
    space = {"finetune_lr": [0.05, 0.5], "pretrain_lr": [0.002, 0.004]}
    with pytest.raises(KeyboardInterrupt):
        stackae.run_tuning(out=out, trials=2, space=space, tune_seeds=(0,), quiet=True, **SMALL)
    chosen = T.chosen_pretraining(stackae.AblateConfig(**SMALL), out, space, 2)
    stack = out / "runs" / "pretrain" / "denoising-d1-s0"  # the chosen trial's, copied in
    assert json.loads((stack / "config.json").read_text())["lr"] == [chosen["denoising"][
        "pretrain_lr"]]
    grid = stackae.run_tuning(out=out, resume=True, quiet=True)  # its stacks are the tuning's
    assert grid.finished
    seed1 = json.loads((out / "runs" / "pretrain" / "denoising-d1-s1" / "config.json").read_text())
    assert seed1["lr"] == [chosen["denoising"]["pretrain_lr"]]
    tuned = json.loads((out / "tune.json").read_text())["choices"]["denoising"]
    assert tuned["100"]["pretraining_trial"] == {"budget": "all", "trial": tuned["all"]["trial"]}


def test_a_tuning_moved_before_its_final_runs_still_adopts_the_chosen_trials_runs(tmp_path,
                                                                                 monkeypatch):
    import shutil

    import stackae.tune_final as T
    real = T.final

    def stops(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(T, "final", stops)
    with pytest.raises(KeyboardInterrupt):
        stackae.run_tuning(out=tmp_path / "t", trials=2, space=SPACE, tune_seeds=(0,), quiet=True,
                           **SMALL)
    shutil.move(tmp_path / "t", tmp_path / "moved")  # the trials recorded the old stack paths
    monkeypatch.setattr(T, "final", real)
    grid = stackae.run_tuning(out=tmp_path / "moved", resume=True, quiet=True)
    assert grid.finished
    adopted = sorted(p.parent.name for p in (tmp_path / "moved" / "runs" / "finetune").glob(
        "*/copied.json"))
    assert adopted == [f"{a}-d1-n{b}-s0" for a in ("denoising", "xavier") for b in ("100", "all")]


def test_a_pretraining_setting_needs_a_pretrained_arm_and_a_fine_tuning_one(tmp_path):
    with pytest.raises(stackae.ConfigError, match="no arm of the grid is pretrained"):
        stackae.run_tuning(out=tmp_path / "a", space={"finetune_lr": [0.1], "noise": [[0.2]]},
                           **{**SMALL, "inits": ("xavier", "random")})
    with pytest.raises(stackae.ConfigError, match="needs at least one fine-tuning setting"):
        stackae.run_tuning(out=tmp_path / "b", space={"pretrain_lr": [1e-3, 1e-2]}, **SMALL)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("space,words", [
    ('{"activation": ["relu", "tanh"]}', "'activation' is a setting of both stages"),
    ('{"weight_decay": [0.0, 0.001]}', "'finetune_weight_decay'"),  # each stage has its own
    ('{"finetune_lrr": [0.1]}', "did you mean 'finetune_lr'"),
    ('{"dropout": {"low": 0.0, "high": 1.5}}', "'dropout': 1.5 is not a valid value"),
    ('{"finetune_lr": 0.1}', "expected a range"),
    ('{"finetune_lr": [0.1,', "is not valid JSON"),
    # a value the setting's own check refuses, or would only take converted: never trained
    ('{"finetune_optimizer": ["sgd", "bogus"]}', "'bogus' is not one of sgd, adam"),
    ('{"finetune_lr": [0.1], "corruption": ["bogus"]}', "is not one of masking"),
    ('{"finetune_epochs": [1, 1.5]}', "'finetune_epochs': 1.5 is not a valid value"),
    ('{"finetune_lr": [0.1], "tied": ["yes"]}', '"yes" is not a valid value (write it as true)'),
    ('{"finetune_lr": ["0.1"]}', "(write it as 0.1)"),
    ('{"finetune_lr": {"low": true, "high": 1}}', "expected a number"),
    ('{"finetune_lr": {"low": 0.1, "high": 1, "log": "yes"}}', '"log" must be true or false'),
    ('{"finetune_lr": {"low": 0.1, "high": 0.5, "step": 1}}',
     "step 1 does not divide the range 0.1 to 0.5 into whole steps"),
    ('{"finetune_lr": {"low": 0.1, "high": 1, "step": 0.4}}', "step 0.4 does not divide"),
    ('{"finetune_batch_size": {"low": 10, "high": 100, "step": 2.5}}',
     "step must be a positive whole number, got 2.5"),
    ('{"finetune_lr": {"low": 0.1, "high": 1, "step": true}}',
     "step must be a positive number, got true"),
    ('[]', "expected a JSON object of settings"),
    ('', "expected a JSON object of settings"),
    # a setting no run of the grid would read, or that no space can tune
    ('{"finetune_lr": [0.1], "cd_k": [1, 5]}', "'cd_k' is read by rbm layers only, and no arm "
     "of the grid is rbm (inits: denoising, xavier)"),
    ('{"finetune_lr": [0.1], "pretrain_momentum": [0.5, 0.9]}',
     "'pretrain_momentum' is read by SGD only, and pretrain_optimizer is adam"),
    ('{"labels": [100]}', "'labels' is a setting of the grid"),
    ('{"seed_batch": [1]}', "'seed_batch' is a setting of how the runs execute"),
    ('{"finetune_lr": [0.1], "finetune_lr": [0.2]}', "names 'finetune_lr' twice"),
    # a setting given per arm names every arm that draws it, and only those
    ('{"finetune_lr": {"denoising": [0.1], "xavir": [0.1]}}',
     "'xavir' is not an arm of the grid; expected a range or list for each of denoising, "
     "xavier; did you mean 'xavier'?"),
    ('{"finetune_lr": {"denoising": [0.1]}}', "'finetune_lr' gives no range or list for xavier"),
    ('{"finetune_lr": [0.1], "noise": {"denoising": [[0.1]], "xavier": [[0.2]]}}',
     "'noise': 'xavier' is a random-init arm, which draws no pretraining settings"),
    ('{"finetune_lr": {"denoising": {"low": 0.1}, "xavier": [0.1]}}',
     "'finetune_lr' for denoising: expected a range"),
    ('{"finetune_lr": {"denoising": [0.1], "xavier": {"low": -1, "high": 1}}}',
     "'finetune_lr' for xavier: -1 is not a valid value"),
    ('{"finetune_lr": {"Low": 0.1, "High": 1}}', "'finetune_lr': expected a range"),  # a typo
    ('{"finetune_lr": {"denoisng": [0.1], "xavir": [0.1]}}',
     "'denoisng' is neither a key of a range (low, high, log, step) nor an arm of the grid; did "
     "you mean 'denoising'?"),
    ('{"finetune_lr": {"xavier": [0.1], "xavier": [0.2]}}', "names 'xavier' twice in one object"),
])
def test_a_bad_search_space_is_one_line_and_writes_nothing(space, words, tmp_path, capsys,
                                                           monkeypatch):
    code, _, err = run_main(["tune", "--train-size", "600", "--val-size", "300", "--labels", "all",
                             "--device", "cpu",
                             "--space", space, "--out", tmp_path / "t"], capsys, monkeypatch)
    assert code == 2 and "'--space'" in err and words in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "t").exists()


@pytest.mark.parametrize("inits, space, words", [
    # RBM layers train with the same optimizer: under Adam they read no momentum either
    ("denoising,rbm,xavier", '{"finetune_lr": [0.1], "pretrain_momentum": [0.5, 0.9]}',
     "'pretrain_momentum' is read by SGD only, and pretrain_optimizer is adam"),
    ("denoising,rbm,xavier", '{"finetune_lr": [0.1], "noise": {"denoising": [[0.1]], "rbm": '
     '[[0.2]]}}', "'noise': 'rbm' layers never read it (denoising layers only); expected a range "
     "or list for each arm that draws it (denoising)"),
    # an RBM trains W alone (its decoder a copy of W's transpose): tied changes none of its codes
    ("rbm,xavier", '{"finetune_lr": [0.1], "tied": [true, false]}',
     "'tied' is read by plain, denoising, sparse and contractive layers only, and no arm of the "
     "grid is plain, denoising, sparse or contractive (inits: rbm, xavier)"),
])
def test_a_setting_an_arm_never_reads_is_refused_for_it(inits, space, words, tmp_path, capsys,
                                                        monkeypatch):
    code, _, err = run_main(["tune", "--train-size", "600", "--val-size", "300", "--labels", "all",
                             "--inits", inits, "--device", "cpu",
                             "--space", space, "--out", tmp_path / "t"], capsys, monkeypatch)
    assert code == 2 and "'--space'" in err and words in err, err
    assert not (tmp_path / "t").exists()


def test_a_space_file_that_is_not_text_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "space.json").write_bytes(b"\xff\xfe")
    code, _, err = run_main(["tune", "--labels", "all", "--space", tmp_path / "space.json",
                             "--out", tmp_path / "t"], capsys, monkeypatch)
    assert code == 2 and "is not a text file" in err and "Traceback" not in err, err
    assert not (tmp_path / "t").exists()


def test_a_diverging_trial_scores_worst_and_tuning_goes_on(tmp_path):
    out = tmp_path / "t"
    grid = stackae.run_tuning(out=out, trials=4, tune_seeds=(0,), quiet=True,
                              space={"finetune_lr": [1e-3, 1e30]}, finetune_optimizer="adam",
                              **{**SMALL, "labels": ("all",), "activation": "relu"})
    recs = trials(out, "all")
    blown = [r for r in recs if r["diverged"]]
    assert blown and all(r["val_error"] == 1.0 and r["settings"]["finetune_lr"] == 1e30
                         for r in blown)
    assert all(r["val_error"] < 1.0 for r in recs if not r["diverged"])
    choices = json.loads((out / "tune.json").read_text())["choices"]
    assert all(c["all"]["settings"]["finetune_lr"] == 1e-3 for c in choices.values())
    assert grid.finished
    report = (out / "REPORT.md").read_text()
    assert report.count("| diverged (scored 100) |") == len(blown)


def test_an_arm_whose_every_trial_diverged_stops_the_tuning_before_its_final_runs(tmp_path,
                                                                                  capsys,
                                                                                  monkeypatch):
    args = ["tune", "--train-size", "600", "--val-size", "300", "--layers", "12", "--seeds", "0",
            "--labels", "all", "--inits", "xavier", "--activation", "relu", "--finetune-epochs",
            "2", "--finetune-optimizer", "adam", "--trials", "2", "--space",
            '{"finetune_lr": [1e30, 1e31]}', "--device", "cpu", "--out", tmp_path / "t"]
    code, _, err = run_main(args, capsys, monkeypatch)
    assert code == 1 and "every trial of xavier at all labels diverged (each scored 100%" in err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Error: every"), err
    assert not (tmp_path / "t" / "runs" / "finetune").exists()  # no final cell ran
    assert len(trials(tmp_path / "t", "all")) == 2  # the trials are kept


@pytest.mark.parametrize("command,words", [
    (["ablate", "--no-read-test"], "No such option '--no-read-test'"),
    (["tune", "--tune-seeds", "0,0"], "'--tune-seeds': has a repeated value"),
    (["tune", "--tune-seeds", ""], "'--tune-seeds'"),
    (["tune", "--seeds", "-1,0"], "'--seeds': must be >= 0, got -1, 0"),
    (["tune", "--prune-after", "-1"], "'--prune-after': -1 is not in the range x>=0"),
])
def test_grid_options_that_cannot_work_are_refused_before_any_folder(command, words, tmp_path,
                                                                     capsys, monkeypatch):
    code, _, err = run_main([*command, "--train-size", "600", "--val-size", "300", "--labels",
                             "all", "--device", "cpu", "--out", tmp_path / "g"], capsys,
                            monkeypatch)
    assert code == 2 and words in err, err
    assert not (tmp_path / "g").exists()


def test_tune_and_ablate_folders_do_not_resume_each_other(tmp_path, capsys, monkeypatch):
    small = ["--train-size", "600", "--val-size", "300", "--labels", "all", "--layers", "8",
             "--seeds", "0,1", "--pretrain-epochs", "1", "--finetune-epochs", "1", "--device",
             "cpu", "-q"]
    code, _, _ = run_main(["ablate", *small, "--out", tmp_path / "a"], capsys, monkeypatch)
    assert code == 0
    code, _, err = run_main(["tune", "--out", tmp_path / "a", "--resume"], capsys, monkeypatch)
    assert code == 2 and "holds a `stackae ablate` run" in err, err
    code, out, err = run_main(["tune", *small[:-1], "--trials", "1", "--stacks-from",
                               tmp_path / "a", "--out", tmp_path / "t", "--dry-run"], capsys,
                              monkeypatch)  # the trials' stacks too are copies, not pretrained
    assert code == 0 and "pretraining: the grid's stacks of seeds 0, 1 (2 of 2 copied), shared " \
        "by every trial" in out, out
    code, out, err = run_main(["tune", *small[:-1], "--trials", "1", "--stacks-from",
                               tmp_path / "a", "--out", tmp_path / "t"], capsys, monkeypatch)
    assert code == 0, err
    said = out + err  # the trials' stacks are said, copied from the grid as they had its settings
    for seed in (0, 1):
        assert f"pretrain denoising-d1-s{seed}: copied from {tmp_path / 'a'}" in said, said
    assert "tune denoising at all labels: trial 1/1 validation error" in said
    code, _, err = run_main(["ablate", "--out", tmp_path / "t", "--resume"], capsys, monkeypatch)
    assert code == 2 and "holds a `stackae tune` run" in err, err


def test_finetune_without_reading_the_test_set(tmp_path, capsys, monkeypatch):
    code, out, _ = run_main(["finetune", "--train-size", "600", "--val-size", "300", "--layers",
                             "8", "--epochs", "1", "--no-read-test", "--device", "cpu", "-q",
                             "--out", tmp_path / "f"], capsys, monkeypatch)
    assert code == 0 and "(test not read)" in out and "test error" not in out
    result = json.loads((tmp_path / "f" / "result.json").read_text())
    assert result["test_error"] is None and 0 < result["best_val_error"] < 1
    assert "best_val_error=" in repr(stackae.artifacts.Classifier(tmp_path / "f"))


def test_trials_that_trail_the_finished_ones_are_pruned_and_say_so(tmp_path, monkeypatch):
    """With --prune-after 1, a trial's network worse at an epoch than the median of its arm's
    finished trials there stops (here once one has finished): the hopeless learning rate is cut
    after its first epoch, the good one never, and the trial, its cell and the report say so."""
    import stackae.proposals as P
    monkeypatch.setattr(P, "PRUNE_STARTUP", 1)
    out = tmp_path / "t"
    stackae.run_tuning(out=out, trials=4, tune_seeds=(0,), quiet=True, prune_after=1,
                       space={"finetune_lr": [1e-4, 0.5]},
                       **{**SMALL, "labels": ("all",), "finetune_epochs": 4})
    recs = trials(out, "all")
    pruned = [r for r in recs if r.get("pruned")]
    assert pruned and {r["settings"]["finetune_lr"] for r in pruned} == {1e-4}
    for r in recs:
        res = json.loads((out / "tune" / "nall" / f"trial-{r['number']:03d}" /
                          f"{r['arm']}-d1-nall-s0" / "result.json").read_text())
        assert res["epochs_run"] == (1 if r.get("pruned") else 4)
        assert res.get("pruned", False) == bool(r.get("pruned"))
        assert r["val_error"] == pytest.approx(res["best_val_error"])
    tuned = json.loads((out / "tune.json").read_text())
    assert tuned["prune_after"] == 1 and "--prune-after 1" in tuned["command"]
    assert all(c["all"]["settings"]["finetune_lr"] == 0.5 for c in tuned["choices"].values())
    report = (out / "REPORT.md").read_text()
    assert "Trials were pruned from epoch 1 on" in report and "Trials pruned: " in report
    # every trial in the report's table and figure, the pruned ones marked
    assert (out / "figures" / "tuning.png").exists() and "![tuning](figures/tuning.png)" in report
    rows = [line for line in report.splitlines() if line.startswith("| all | ")
            and line.count("|") == 6]
    assert len(rows) == 8 and sum(row.endswith(", pruned |") for row in rows) == len(pruned)
    plan = "\n".join(stackae.plan_tuning(out=out, resume=True))  # the dry run of its folder
    assert "pruning: from epoch 1," in plan and "progress: 8 of 8 trials" in plan
    with pytest.raises(stackae.ConfigError, match="differs from the tuning being resumed"):
        stackae.run_tuning(out=out, resume=True, prune_after=2, quiet=True)
    with pytest.raises(stackae.ConfigError, match="prune_after.*must be 0 .no pruning. or an epoch"):
        stackae.run_tuning(out=tmp_path / "bad", prune_after=-1, quiet=True, **SMALL)
    assert not (tmp_path / "bad").exists()


def test_a_chosen_trials_pruned_run_is_trained_again_not_adopted(tmp_path, monkeypatch):
    """A tuning seed's final cell is the chosen trial's run only when that ran to its last
    epoch: a pruned one (marked so here before the final runs) is trained again."""
    from stackae import tune_final
    real = tune_final.final

    def marked(cfg, out, cells, choices, device, say):
        for arm, per in choices.items():
            path = (out / "tune" / "nall" / f"trial-{per['all']['trial']:03d}" /
                    f"{arm}-d1-nall-s0" / "result.json")
            path.write_text(json.dumps({**json.loads(path.read_text()), "pruned": True}))
        real(cfg, out, cells, choices, device, say)
    monkeypatch.setattr(tune_final, "final", marked)
    out = tmp_path / "t"
    grid = stackae.run_tuning(out=out, trials=1, tune_seeds=(0,), quiet=True,
                              **{**SMALL, "labels": ("all",), "inits": ("xavier",)})
    cell = out / "runs" / "finetune" / "xavier-d1-nall-s0"
    assert grid.finished and not (cell / "copied.json").exists()
    assert "pruned" not in json.loads((cell / "result.json").read_text())


def test_the_prune_replay_script_prunes_a_finished_tuning_as_a_pruned_tuning_did(tmp_path,
                                                                                  monkeypatch,
                                                                                  capsys):
    """scripts/prune_replay.py on an unpruned tuning names the trials that the same tuning run
    with --prune-after pruned (the Sobol start draws the same settings either way)."""
    import importlib.util
    import stackae.proposals as P
    monkeypatch.setattr(P, "PRUNE_STARTUP", 1)
    path = Path(__file__).resolve().parents[1] / "scripts" / "prune_replay.py"
    spec = importlib.util.spec_from_file_location("prune_replay", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    settings = dict(trials=4, tune_seeds=(0,), quiet=True, space={"finetune_lr": [1e-4, 0.5]},
                    **{**SMALL, "labels": ("all",), "finetune_epochs": 4})
    stackae.run_tuning(out=tmp_path / "whole", **settings)
    stackae.run_tuning(out=tmp_path / "pruned", prune_after=1, **settings)
    capsys.readouterr()
    script.main([str(tmp_path / "whole"), "--after", "1"])
    lines = capsys.readouterr().out.splitlines()
    for arm in ("denoising", "xavier"):
        real = [r["number"] + 1 for r in trials(tmp_path / "pruned", "all")
                if r["arm"] == arm and r.get("pruned")]
        (line,) = [x for x in lines if x.startswith(f"{arm} at all labels")]
        assert real and f"pruned {', '.join(map(str, real))};" in line, (line, real)
        assert "the same as unpruned" in line


def test_under_a_cosine_schedule_a_trial_is_pruned_only_against_trials_of_as_many_epochs(
        tmp_path, monkeypatch):
    """A long cosine run trails a short one mid-way (its rate still high) without being worse:
    the pruner compares it only with finished trials of as many epochs; under a constant rate,
    with every finished trial."""
    import stackae.proposals as P
    from stackae.ablate import Job
    from stackae.config_grid import AblateConfig
    from stackae.grid import Cell
    from stackae.proposals import pruners
    monkeypatch.setattr(P, "PRUNE_STARTUP", 1)
    cell = Cell("xavier", 1, "all", 0)

    def trial(n, epochs, curve=None):
        folder = tmp_path / f"trial-{n:03d}"
        (folder / cell.id).mkdir(parents=True)
        (folder / "settings.json").write_text(json.dumps({"xavier": {"finetune_epochs": epochs}}))
        if curve:
            (folder / cell.id / "result.json").write_text(
                json.dumps({"curves": {"val_error": curve}}))
        return {"arm": "xavier", "number": n, "settings": {"finetune_epochs": epochs},
                "diverged": False, "val_error": min(curve or [1.0])}
    done = {"xavier": [trial(0, 2, [0.1, 0.05]), trial(1, 4, [0.5, 0.4, 0.2, 0.1])]}
    trial(2, 4)  # running: 4 epochs, 0.45 after its first
    job = Job(cell, tmp_path / "trial-002" / cell.id, tmp_path / "results.jsonl", tmp_path)
    for schedule, stops in (("cosine", False), ("constant", True)):
        cfg = AblateConfig(inits=("xavier",), layers=(12,), finetune_lr_schedule=schedule)
        assert pruners(cfg, tmp_path, done, 1)(job)([0.45]) is stops, schedule


@pytest.mark.parametrize("epochs,schedule,space,words", [
    ((30, 29), "constant", [10, 30], "best epochs 30 and 29) on 2 of 2 tuning seeds, at a constant "
                                     "rate; a longer schedule may do better (30 epochs is the "
                                     "most the space tries: widen its range)"),
    ((30, 28), "constant", None, "best epochs 30 and 28) on 2 of 2 tuning seeds, at a constant "
                                 "rate; a longer schedule may do better"),
    ((30, 20), "constant", [10, 30], None),  # one seed of two: not most
    ((30, 30), "cosine", [10, 30], None),  # a rate near 0 at the end: converged
])
def test_a_choice_still_learning_when_it_stopped_is_warned_of(epochs, schedule, space, words,
                                                              tmp_path):
    from stackae.report_tuning import still_learning
    trial = tmp_path / "tune" / "n100" / "trial-003"
    lines = []
    for seed, best in enumerate(epochs):
        for arm in ("denoising", "xavier"):
            cell = f"{arm}-d1-n100-s{seed}"
            (trial / cell).mkdir(parents=True)
            result = {"best_epoch": best if arm == "xavier" else 5, "epochs_run": 30,
                      "config": {"lr_schedule": schedule, "epochs": 30}}
            (trial / cell / "result.json").write_text(json.dumps(result))
            lines.append(json.dumps({"id": cell, "folder": cell, "init": arm, "labels": 100,
                                     "epochs_run": 30, "seconds": 1.0}))
    (trial / "results.jsonl").write_text("\n".join(lines) + "\n{\"id\": \"cut")  # a cut line
    choices = {arm: {"100": {"trial": 3, "settings": {}}} for arm in ("denoising", "xavier")}
    found = still_learning(tmp_path, {"finetune_epochs": space} if space else {}, choices)
    if words is None:
        assert found == []
    else:  # only xavier's networks were still learning
        assert found == ["xavier's choice at 100 labels (trial 4) was still learning when it "
                         "stopped: best in the last tenth of its 30 epochs (" + words]
        so_far = still_learning(tmp_path, {"finetune_epochs": space} if space else {}, choices,
                                "best trial so far")  # as a progress report names it
        assert so_far == [found[0].replace("choice", "best trial so far")]


def test_trial_compute_counts_each_arms_own_passes_and_stacks(tmp_path):
    """An equal number of trials can be very unequal training: the report counts each arm's
    example passes from its runs' epochs, labels and min_epoch_examples, and says how far apart."""
    from stackae.report_tuning_text import compute_by_arm
    from stackae.report_tuning import trial_compute
    trial = tmp_path / "tune" / "n100" / "trial-000"
    lines = []
    for arm, epochs, least in (("denoising", 30, 10000), ("xavier", 100, 250)):
        (trial / f"{arm}-d3-n100-s0").mkdir(parents=True)
        (trial / f"{arm}-d3-n100-s0" / "config.json").write_text(
            json.dumps({"min_epoch_examples": least}))
        lines.append(json.dumps({"id": f"{arm}-d3-n100-s0", "folder": f"{arm}-d3-n100-s0",
                                 "init": arm, "labels": 100, "epochs_run": epochs,
                                 "seconds": 10.0}))
    (trial / "results.jsonl").write_text("\n".join(lines) + '\n{"id": "cut sh')
    (trial / "pretrain" / "denoising-d3-s0").mkdir(parents=True)
    (trial / "pretrain" / "denoising-d3-s0" / "summary.json").write_text('{"seconds": 5.0}')
    c = trial_compute(tmp_path, ["denoising", "xavier"], min_epoch_examples=0)
    assert c["per_arm"]["denoising"] == {"finetunes": 1, "finetune_seconds": 10.0,
                                         "finetune_example_passes": 30 * 100 * 100,
                                         "pretrain_runs": 1, "pretrain_seconds": 5.0}
    assert c["per_arm"]["xavier"]["finetune_example_passes"] == 100 * 100 * 3
    assert c["finetunes"] == 2 and c["finetune_example_passes"] == 300000 + 30000
    text = "\n".join(compute_by_arm(c["per_arm"]))
    assert "| denoising | 1 | 300,000 | 10 | 1 | 5 |" in text
    assert "denoising's trial fine-tunes passed over 10.0 times the training examples of " \
           "xavier's" in text
