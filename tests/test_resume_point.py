"""A fine-tuning killed mid-run continues from its last resume point (resume.pt) and ends as it
would have uninterrupted: the same curves, selected weights and test error, each epoch logged
once; in a grid, its networks may be batched differently on resume."""
import json

import pytest
import torch

import stackae
from stackae import finetune as F
from stackae import resume
from stackae.checkpoint import RESUME_NAME, read, resume_epoch

SMALL = dict(train_size=600, val_size=300, layers=(16, 8), device="cpu")


def killed_after(epoch: int, folders, monkeypatch):
    """Make the next fine-tuning stop (as ctrl-c does) once every folder's resume point stands
    after `epoch`; resume points are saved after every epoch."""
    monkeypatch.setattr(resume, "RESUME_SECONDS", 0.0)

    def stop():
        if all(resume_epoch(f) == epoch for f in folders):
            raise KeyboardInterrupt
    monkeypatch.setattr(F, "stop_point", stop)


def finetune_records(folder) -> list[dict]:
    return [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
            if r.get("stage") == "finetune"]


def finetune_epochs(folder) -> list[int]:
    return [r["step"] for r in finetune_records(folder)]


def test_a_killed_finetune_resumes_where_it_stood_and_ends_as_uninterrupted(tmp_path, monkeypatch):
    # momentum, a cosine schedule, dropout and an epoch longer than the labelled set: every
    # piece of state a resume point must carry (optimizer buffers, the schedule's position, the
    # batch-order and dropout streams, the best epoch so far)
    settings = dict(SMALL, labels=200, epochs=5, lr=0.3, lr_schedule="cosine", dropout=0.2,
                    input_dropout=0.1, min_epoch_examples=500, batch_size=32,
                    init_scheme="xavier", quiet=True)
    whole = stackae.finetune_classifier(out=tmp_path / "whole", **settings)
    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        killed_after(3, [out], m)
        with pytest.raises(KeyboardInterrupt):
            stackae.finetune_classifier(out=out, **settings)
    assert not (out / "result.json").exists() and read(out / RESUME_NAME)["epoch"] == 3
    done = finetune_records(out)
    assert [r["step"] for r in done] == [1, 2, 3]  # epoch 4 was under way
    resumed = stackae.finetune_classifier(out=out, resume=True, quiet=True)
    assert finetune_records(out)[:3] == done  # continued, not started again
    a, b = whole.result, resumed.result
    assert a["curves"] == b["curves"] and a["test_error"] == b["test_error"]
    assert a["best_epoch"] == b["best_epoch"] and b["seconds"] > 0
    sa, sb = (torch.load(f / "model.pt", weights_only=True)["state"] for f in (whole.folder,
                                                                                  resumed.folder))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert finetune_epochs(out) == [1, 2, 3, 4, 5]  # each epoch once, in both sinks
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    board = EventAccumulator(str(out)).Reload()  # as TensorBoard reads it
    assert [e.step for e in board.Tensors("finetune/val_error")] == [1, 2, 3, 4, 5]
    assert not (out / RESUME_NAME).exists()  # gone with the finished run


def test_a_resume_point_of_other_settings_is_not_taken(tmp_path, monkeypatch):
    settings = dict(SMALL, labels=200, epochs=3, init_scheme="xavier", quiet=True)
    out = tmp_path / "r"
    with monkeypatch.context() as m:
        killed_after(1, [out], m)
        with pytest.raises(KeyboardInterrupt):
            stackae.finetune_classifier(out=out, **settings)
    point = read(out / RESUME_NAME)
    point["config"]["lr"] = 0.5  # as if saved by a run of another learning rate
    torch.save(point, out / RESUME_NAME)
    r = stackae.finetune_classifier(out=out, resume=True, quiet=True)
    whole = stackae.finetune_classifier(out=tmp_path / "whole", **settings)
    assert r.result["curves"] == whole.result["curves"]  # started again, not from the point
    assert finetune_epochs(out) == [1, 2, 3]


@pytest.mark.parametrize("batch", [4, 1])
def test_a_killed_grid_resumes_its_networks_batched_as_it_decides(tmp_path, monkeypatch, batch):
    grid = dict(SMALL, inits=("xavier", "kaiming"), seeds=(0, 1), labels=("300",),
                finetune_epochs=4, finetune_lr=0.2, finetune_lr_schedule="cosine",
                dropout=0.1, quiet=True)
    whole = stackae.run_ablation(out=tmp_path / "whole", **grid)
    out = tmp_path / "killed"
    cells = [f"{i}-d2-n300-s{s}" for i in ("xavier", "kaiming") for s in (0, 1)]
    with monkeypatch.context() as m:
        killed_after(2, [out / "runs" / "finetune" / c for c in cells], m)
        with pytest.raises(KeyboardInterrupt):
            stackae.run_ablation(out=out, seed_batch=4, **grid)  # the four in one loop
    done = {c: finetune_records(out / "runs" / "finetune" / c) for c in cells}
    assert all(len(d) == 2 for d in done.values())
    plan = "\n".join(stackae.plan_ablation(out=out, resume=True))
    assert plan.count("part-way: resumes after epoch 2 of 4") == 4, plan
    resumed = stackae.run_ablation(out=out, resume=True, seed_batch=batch, quiet=True)

    def results(g):
        return {r["id"]: r for r in map(json.loads, (g.folder / "results.jsonl").read_text()
                                        .splitlines())}
    a, b = results(whole), results(resumed)
    assert sorted(a) == sorted(b) == sorted(cells)
    for c in cells:
        assert b[c]["best_epoch"] == a[c]["best_epoch"]
        if batch == 4:  # resumed as they were batched: the same floats
            curves = [json.loads((g.folder / "runs" / "finetune" / c / "result.json").read_text())
                      ["curves"] for g in (whole, resumed)]
            assert curves[0] == curves[1]
        else:  # one by one: the same to float rounding (tests/test_stacked.py)
            assert b[c]["test_error"] == pytest.approx(a[c]["test_error"], abs=1e-3)
        records = finetune_records(out / "runs" / "finetune" / c)
        assert [r["step"] for r in records] == [1, 2, 3, 4] and records[:2] == done[c]
        assert not (out / "runs" / "finetune" / c / RESUME_NAME).exists()


def test_networks_saved_apart_resume_together_with_and_without_dropout(tmp_path, monkeypatch):
    """A point saved by a loop without dropout holds no dropout stream: beside a network with
    dropout it resumes with a fresh one, where it stood (it never draws from it)."""
    from stackae import data as D
    from stackae.config import FinetuneConfig
    from stackae.runner import run_finetunes
    cpu = torch.device("cpu")
    base = dict(train_size=600, val_size=300, layers=(16, 8), device="cpu", labels="200",
                epochs=4, init_scheme="xavier", batch_size=32)
    cfgs = [FinetuneConfig(**base, seed=0), FinetuneConfig(**base, seed=1, dropout=0.2)]
    datas = [D.load(c, cpu) for c in cfgs]
    whole = [run_finetunes([c], [tmp_path / f"whole{k}"], cpu, [d], quiet=True)[0]
             for k, (c, d) in enumerate(zip(cfgs, datas))]
    outs = [tmp_path / "a", tmp_path / "b"]
    for c, d, out in zip(cfgs, datas, outs):
        with monkeypatch.context() as m:
            killed_after(2, [out], m)
            with pytest.raises(KeyboardInterrupt):
                run_finetunes([c], [out], cpu, [d], quiet=True)
    assert "dropout" not in read(outs[0] / RESUME_NAME)["streams"]
    together = run_finetunes(cfgs, outs, cpu, datas, quiet=True)
    for a, b in zip(whole, together):
        assert b["best_epoch"] == a["best_epoch"] and b["epochs_run"] == 4
        assert b["curves"]["val_error"] == pytest.approx(a["curves"]["val_error"], abs=1e-2)
        assert b["curves"]["train_loss"] == pytest.approx(a["curves"]["train_loss"], rel=1e-3)


def test_a_grid_resumed_under_another_spelling_of_its_folder_keeps_its_points(tmp_path,
                                                                              monkeypatch):
    """Stack paths are recorded as --out was given: resumed as a relative path, the cells'
    points still fit (and the pretrained arm still starts from the same stack)."""
    grid = dict(SMALL, inits=("denoising", "xavier"), seeds=(0,), labels=("300",),
                pretrain_epochs=(1,), finetune_epochs=4, quiet=True)
    out = tmp_path / "grid"
    cells = ["denoising-d2-n300-s0", "xavier-d2-n300-s0"]
    with monkeypatch.context() as m:
        killed_after(2, [out / "runs" / "finetune" / c for c in cells], m)
        with pytest.raises(KeyboardInterrupt):
            stackae.run_ablation(out=out, **grid)  # the absolute path
    done = {c: finetune_records(out / "runs" / "finetune" / c) for c in cells}
    monkeypatch.chdir(tmp_path)
    stackae.run_ablation(out="grid", resume=True, quiet=True)
    for c in cells:
        assert finetune_records(out / "runs" / "finetune" / c)[:2] == done[c]  # continued


def test_a_resume_point_from_before_the_test_set_was_read_once_still_resumes():
    # points saved when the loop read the test set every epoch hold a test-error curve and the
    # best epoch's test error; resumed, those are dropped and the curves go on without them
    from stackae.selection import Selection
    old = {"curves": {"train_loss": [0.5], "train_error": [0.2], "val_loss": [0.4],
                      "val_error": [0.1], "test_error": [0.11]},
           "best": {"val_error": 0.1, "epoch": 1, "test_error": 0.11}, "stopped": False}
    sel = Selection(patience=0)
    sel.set_state(old)
    assert sel.update(2, {"train_loss": 0.3, "train_error": 0.1, "val_loss": 0.3,
                          "val_error": 0.05})
    result = sel.result(test_error=0.06)
    assert result["test_error"] == 0.06 and result["best_epoch"] == 2
    assert set(result["curves"]) == {"train_loss", "train_error", "val_loss", "val_error"}
    assert result["curves"]["val_error"] == [0.1, 0.05]
