"""Issue 17, what a hostile new user still broke: racing runs into one folder, reused checkpoints
with other settings, half-made folders, tracebacks, and resumed runs whose logs did not read as one
run. Each test reproduces one case and checks the one-line answer it now gets."""
import errno
import gzip
import json
import os
import shlex
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch

import stackae
from conftest import SLICE, invoke, make_idx_folder, run_main

PY = [sys.executable, "-m", "stackae"]
TINY_GRID = ["--layers", "16", "--train-size", "300", "--val-size", "200", "--device", "cpu",
             "--pretrain-epochs", "1", "--finetune-epochs", "2", "--min-epoch-examples", "300",
             "--labels", "20", "-q"]


def one_line(code, err, expect_code, *texts):
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == expect_code, err
    assert len(lines) == 1 and lines[0].startswith("Error:") and "Traceback" not in err, err
    for t in texts:
        assert t in lines[0], lines[0]
    if os.environ.get("STACKAE_BAD_INPUT_LOG"):  # the catalogue of messages, for the docs
        with open(os.environ["STACKAE_BAD_INPUT_LOG"], "a") as f:
            f.write(f"{code}\t{os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0]}\t"
                    f"{lines[0]}\n")
    return lines[0]


def together(*commands):
    """Start the commands at the same moment; their (exit status, stderr)."""
    procs = [subprocess.Popen(PY + [str(a) for a in c], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    return [(p.wait(timeout=300), p.communicate()[1]) for p in procs]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    out = tmp_path_factory.mktemp("stack") / "p"
    r = invoke("pretrain", *SLICE, "--layers", "16", "--epochs", "1", "-q", "--out", out)
    assert r.exit_code == 0, r.output
    return out / "stack.pt"


# ---- silent wrong results ---------------------------------------------------------------------

def test_shards_started_together_with_different_settings_one_is_refused(tmp_path):
    out = tmp_path / "g"
    grid = ["ablate", "--inits", "random,xavier", "--seeds", "0,1", *TINY_GRID, "--out", out]
    results = together([*grid, "--shard", "1/2", "--finetune-epochs", "3"],
                       [*grid, "--shard", "2/2", "--finetune-epochs", "2"])
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(e for code, e in results if code == 2)
    one_line(2, err, 2, "--finetune-epochs", "differs from the grid")
    epochs = json.loads((out / "config.json").read_text())["finetune_epochs"]
    for line in (out / "results.jsonl").read_text().splitlines():
        assert json.loads(line)["epochs_run"] == epochs  # one setting throughout the grid


def test_two_pretrains_into_one_fresh_folder_one_is_refused(tmp_path):
    out = tmp_path / "p"
    base = ["pretrain", *SLICE, "--epochs", "1", "-q", "--out", out]
    results = together([*base, "--layers", "16"], [*base, "--layers", "24"])
    assert sorted(code for code, _ in results) == [0, 2], results
    err = next(e for code, e in results if code == 2)
    one_line(2, err, 2, "--out")
    saved = json.loads((out / "config.json").read_text())["layers"]
    stack = torch.load(out / "stack.pt", weights_only=True)
    assert [l["width"] for l in stack["layers"]] == saved == stack["config"]["layers"]


def test_the_same_shard_twice_at_once_runs_each_cell_once(tmp_path):
    out = tmp_path / "g"
    cmd = ["ablate", "--inits", "random,xavier,kaiming,uniform", "--seeds", "0,1", *TINY_GRID,
           "--shard", "1/2", "--out", out]
    results = together(cmd, cmd)
    assert [code for code, _ in results] == [0, 0], results
    ids = [json.loads(l)["id"] for l in (out / "results.jsonl").read_text().splitlines()]
    assert len(ids) == 4 and len(set(ids)) == 4, ids


def test_ablate_refuses_a_stack_pretrained_with_other_settings(tmp_path):
    out = tmp_path / "g"
    grid = ["ablate", "--inits", "denoising,random", "--seeds", "0,1", *TINY_GRID, "--out", out]
    assert invoke(*grid, "--shard", "1/2").exit_code == 0
    foreign = out / "runs" / "pretrain" / "denoising-d1-s1"  # what shard 2 would pretrain
    r = invoke("pretrain", "--layers", "24", "--train-size", "300", "--val-size", "200",
               "--device", "cpu", "--epochs", "1", "-q", "--seed", "1", "--out", foreign)
    assert r.exit_code == 0, r.output
    r = invoke(*grid, "--shard", "2/2")
    assert r.exit_code == 1 and "--layers 24, but this grid's cell denoising-d1-n20-s1 needs 16" \
        in r.output, r.output
    assert not (out / "runs" / "finetune" / "denoising-d1-n20-s1").exists()


def npz(path, y_train, n=60):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((n, 16)).astype(np.float32), y_train=y_train,
             x_test=rng.random((20, 16)).astype(np.float32), y_test=np.arange(20) % 2)
    return path


@pytest.mark.parametrize("labels, text", [
    (np.zeros(60, dtype=np.int64), "classification needs at least two classes"),
    (np.r_[np.arange(59) % 2, 10**9].astype(np.int64), "labels go up to 1000000000"),
    (np.arange(60) % 2 + 1, "no training image has label 0, so the classifier would have a class "
     "it never sees; labels must be class indices 0..C-1, each present; labels 1..2 look "
     "shifted: subtract 1"),
    (np.arange(60) % 2 * 2, "no training image has label 1, so"),
])
def test_labels_need_two_classes_and_no_more_classes_than_images(labels, text, tmp_path, capsys,
                                                                  monkeypatch):
    data = npz(tmp_path / "d.npz", labels)
    code, _, err = run_main(["finetune", "--data", data, "--val-size", "20", "--layers", "8",
                             "--epochs", "1", "--out", tmp_path / "run"], capsys, monkeypatch)
    one_line(code, err, 1, text)
    assert not (tmp_path / "run").exists()


def test_an_empty_list_item_is_an_error(tmp_path, capsys, monkeypatch):
    code, _, err = run_main(["pretrain", *SLICE, "--layers", "1000,,500", "--out", tmp_path / "r"],
                            capsys, monkeypatch)
    one_line(code, err, 2, "--layers", "empty item")


def test_finetune_resume_of_a_finished_run_checks_the_options(tmp_path):
    out = tmp_path / "f"
    assert invoke("finetune", *SLICE, "--layers", "8", "--epochs", "1", "-q", "--out",
                  out).exit_code == 0
    r = invoke("finetune", *SLICE, "--layers", "8", "--epochs", "5", "-q", "--out", out, "--resume")
    assert r.exit_code == 2 and "'--epochs': differs from the run being resumed" in r.output
    r = invoke("finetune", "--out", out, "--resume")
    assert r.exit_code == 0 and "already finished" in r.output


def test_compile_is_how_a_run_executes_not_what_it_is(tmp_path):
    """Folders and stacks from before --compile existed, or run with the other choice, resume."""
    from stackae.checks import mismatch
    from stackae.config import PretrainConfig, to_dict
    cfg = PretrainConfig(layers=(16,))
    old = {k: v for k, v in to_dict(cfg).items() if k != "compile"}
    assert mismatch(old, cfg) is None and mismatch(old, PretrainConfig(layers=(16,),
                                                                       compile=True)) is None
    out = tmp_path / "f"
    assert invoke("finetune", *SLICE, "--layers", "8", "--epochs", "1", "-q", "--out",
                  out).exit_code == 0
    r = invoke("finetune", "--out", out, "--resume", "--compile")
    assert r.exit_code == 0 and "already finished" in r.output


def test_pretrain_resume_of_a_finished_run_trains_nothing_again(tmp_path):
    out = tmp_path / "p"
    args = ("--layers", "16,8", "--objective", "rbm", "--epochs", "1", "--unroll-epochs", "2")
    assert invoke("pretrain", *SLICE, *args, "-q", "--out", out).exit_code == 0
    before = (out / "stack.pt").read_bytes(), (out / "metrics.jsonl").read_text()
    r = invoke("pretrain", "--out", out, "--resume")
    assert r.exit_code == 0 and "already finished" in r.output
    assert ((out / "stack.pt").read_bytes(), (out / "metrics.jsonl").read_text()) == before
    r = invoke("pretrain", *SLICE, *args[:-1], "3", "-q", "--out", out, "--resume")
    assert r.exit_code == 2 and "'--unroll-epochs': differs from the run being resumed" in r.output


def test_a_resumed_layer_from_another_seed_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, 0), (b, 1)):
        r = invoke("pretrain", *SLICE, "--layers", "16,8", "--epochs", "1", "--seed", seed, "-q",
                   "--out", out)
        assert r.exit_code == 0, r.output
    for name in ("layer2.pt", "stack.pt"):  # as if killed in layer 2
        (a / name).unlink()
    shutil.copy(b / "layer1.pt", a / "layer1.pt")
    r = invoke("pretrain", "--out", a, "--resume")
    assert r.exit_code == 1 and "layer1.pt was trained with --seed 1, but this run has 0" \
        in r.output, r.output


# ---- half-made folders ------------------------------------------------------------------------

@pytest.mark.parametrize("args, option", [
    (["--train-size", "99999"], "--train-size"),
    (["--val-size", "70000"], "--val-size"),
])
def test_a_failed_ablate_leaves_no_folder_and_the_fix_runs(args, option, tmp_path, capsys,
                                                           monkeypatch):
    out = tmp_path / "g"
    base = ["ablate", "--inits", "random", "--seeds", "0", "--layers", "8", "--labels", "20",
            "--device", "cpu", "--finetune-epochs", "1", "--min-epoch-examples", "100", "-q"]
    code, _, err = run_main([*base, "--val-size", "200", *args, "--out", out], capsys, monkeypatch)
    one_line(code, err, 2, option)
    assert not out.exists()
    r = invoke(*base, "--train-size", "300", "--val-size", "200", "--out", out)
    assert r.exit_code == 0, r.output


def test_an_unavailable_dataset_leaves_no_folder(tmp_path, capsys, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*a, **kw):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")
    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    out = tmp_path / "g"
    code, _, err = run_main(["ablate", "--dataset", "fashion-mnist", "--out", out], capsys,
                            monkeypatch)
    one_line(code, err, 1, "could not load fashion-mnist", "without network")
    assert not out.exists()


@pytest.mark.parametrize("command", ["pretrain", "finetune", "ablate"])
def test_a_network_too_large_for_memory_leaves_no_folder(command, tmp_path, capsys, monkeypatch):
    out = tmp_path / "big"
    extra = ["--labels", "20"] if command == "ablate" else []
    code, _, err = run_main([command, *SLICE, *extra, "--layers", "100000000", "--out", out],
                            capsys, monkeypatch)
    one_line(code, err, 2, "'--layers'", "GiB of memory")
    assert not out.exists()


def test_after_divergence_the_kept_layers_resume_with_a_smaller_lr(tmp_path, capsys, monkeypatch):
    out = tmp_path / "div run"
    args = ["pretrain", *SLICE, "--layers", "30,30", "--activation", "relu", "--epochs", "1,2",
            "--optimizer", "sgd", "-q", "--out", out]
    code, _, err = run_main([*args, "--lr", "0.01,1e8"], capsys, monkeypatch)
    line = one_line(code, err, 1, "diverged: layer 2")
    cont = line.split("Continue with: ")[1]
    assert shlex.split(cont) == ["stackae", "pretrain", "--out", str(out), "--resume", "--lr",
                                 "0.01,1e+07"]
    layer1 = (out / "layer1.pt").read_bytes()
    code, _, err = run_main(["pretrain", "--out", out, "--resume", "--lr", "0.001"], capsys,
                            monkeypatch)
    one_line(code, err, 2, "'--lr'", "layer 1 is finished with 0.01", "--lr 0.01,0.001")
    code, _, err = run_main(["pretrain", "--out", out, "--resume", "--lr", "0.01,0.001"], capsys,
                            monkeypatch)
    assert code == 0, err
    assert (out / "layer1.pt").read_bytes() == layer1  # kept, not retrained
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lr"] == [0.01, 0.001] and cfg["resumed"][0]["changed"] == {"lr": [0.01, 1e8]}
    assert torch.load(out / "layer2.pt", weights_only=True)["config"]["lr"] == [0.01, 0.001]


def test_resume_may_not_change_settings_of_finished_layers(tmp_path):
    out = tmp_path / "p"
    assert invoke("pretrain", *SLICE, "--layers", "16", "--epochs", "1", "-q", "--out",
                  out).exit_code == 0
    r = invoke("pretrain", "--out", out, "--resume", "--lr", "0.01")
    assert r.exit_code == 2 and "'--lr': differs from the run being resumed (0.001)" in r.output


# ---- tracebacks where one line is promised ----------------------------------------------------

def test_disk_full_while_pretraining_is_one_line(tmp_path, capsys, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(SummaryWriter, "add_scalar", full)
    code, _, err = run_main(["pretrain", *SLICE, "--layers", "8", "--epochs", "1", "-q", "--out",
                             tmp_path / "p"], capsys, monkeypatch)
    one_line(code, err, 1, "No space left on device", "disk full", "--resume")


def test_disk_full_while_saving_the_fine_tuned_model_is_one_line(tmp_path, capsys, monkeypatch):
    def full(obj, f, *a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")
    monkeypatch.setattr(torch, "save", full)
    code, _, err = run_main(["finetune", *SLICE, "--layers", "8", "--epochs", "1", "-q", "--out",
                             tmp_path / "f"], capsys, monkeypatch)
    one_line(code, err, 1, "could not write", "model.pt", "file write failed")
    assert not list((tmp_path / "f").glob(".model.pt.*"))  # no half file left


def test_resume_on_another_commands_folder_or_a_damaged_config(tmp_path, capsys, monkeypatch):
    fin = tmp_path / "f"
    assert invoke("finetune", *SLICE, "--layers", "8", "--epochs", "1", "-q", "--out",
                  fin).exit_code == 0
    code, _, err = run_main(["pretrain", "--out", fin, "--resume"], capsys, monkeypatch)
    one_line(code, err, 2, "holds a `stackae finetune` run")
    code, _, err = run_main(["ablate", "--out", fin, "--resume"], capsys, monkeypatch)
    one_line(code, err, 2, "holds a `stackae finetune` run")
    (fin / "result.json").unlink()
    (fin / "config.json").write_text('{"layers": [8], "epochs": ')
    code, _, err = run_main(["finetune", "--out", fin, "--resume"], capsys, monkeypatch)
    one_line(code, err, 1, "cannot resume", "config.json is not valid JSON")


@pytest.mark.parametrize("command", ["pretrain", "finetune", "ablate", "tune"])
def test_resume_without_out_is_refused_before_any_folder(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it would have made a new runs/<command>/<date-time>
    code, _, err = run_main([command, "--resume"], capsys, monkeypatch)
    one_line(code, err, 2, "'--resume'", "name it with --out")
    assert not (tmp_path / "runs").exists()
    if command == "ablate":  # and through the API
        with pytest.raises(stackae.ConfigError, match="names the run folder to continue"):
            stackae.run_ablation(resume=True, train_size=600, val_size=300)
        assert not (tmp_path / "runs").exists()


def test_a_binary_config_file_is_one_line(tmp_path, capsys, monkeypatch, stack):
    code, _, err = run_main(["finetune", "--config", stack, "--out", tmp_path / "r"], capsys,
                            monkeypatch)
    one_line(code, err, 2, "--config", "not a text file")


def test_a_gzip_idx_with_corrupted_bytes_is_one_line(tmp_path, capsys, monkeypatch):
    data = make_idx_folder(tmp_path / "d", gz=True)
    path = data / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    for k in range(12, len(raw) - 8):  # the first flip that zlib itself rejects
        bad = raw[:k] + bytes([raw[k] ^ 0xFF]) + raw[k + 1:]
        try:
            gzip.decompress(bad)
        except zlib.error:
            break
        except Exception:
            continue
    path.write_bytes(bad)
    code, _, err = run_main(["pretrain", "--data", data, "--val-size", "30", "--layers", "8",
                             "--out", tmp_path / "r"], capsys, monkeypatch)
    one_line(code, err, 1, "damaged gzip file", str(path))


def test_weights_blowing_up_with_a_finite_loss_is_one_line(tmp_path, capsys, monkeypatch):
    code, _, err = run_main(["pretrain", *SLICE, "--layers", "16", "--epochs", "1", "--lr", "1e30",
                             "--optimizer", "sgd", "-q", "--out", tmp_path / "p"], capsys,
                            monkeypatch)
    one_line(code, err, 1, "diverged: layer 1 weights blew up", "--lr")


def test_a_seed_out_of_range_is_a_usage_error(tmp_path, capsys, monkeypatch):
    code, _, err = run_main(["pretrain", *SLICE, "--seed", "99999999999999999999", "--out",
                             tmp_path / "p"], capsys, monkeypatch)
    one_line(code, err, 2, "--seed", "out of range")


@pytest.mark.parametrize("damage, text", [
    (lambda layer: layer.update(activation="swish"), "layer 1 has activation 'swish'"),
    (lambda layer: layer["weight"].__setitem__((0, 0), float("nan")),
     "layer 1 weights hold NaN or Inf"),
])
def test_a_damaged_stack_is_named_not_blamed_on_the_lr(damage, text, tmp_path, capsys, monkeypatch,
                                                       stack):
    ck = torch.load(stack, weights_only=True)
    damage(ck["layers"][0])
    bad = tmp_path / "stack.pt"
    torch.save(ck, bad)
    code, _, err = run_main(["finetune", *SLICE, "--init", bad, "--epochs", "1", "--out",
                             tmp_path / "f"], capsys, monkeypatch)
    one_line(code, err, 1, str(bad), text)
    assert not (tmp_path / "f").exists()


def test_report_skips_results_lines_it_cannot_use(tmp_path):
    from test_report import synthetic
    folder = synthetic(tmp_path / "g", {("denoising", "100"): 0.1, ("random", "100"): 0.2},
                       budgets=("100",))
    good = json.loads((folder / "results.jsonl").read_text().splitlines()[0])
    with open(folder / "results.jsonl", "a") as f:
        f.write(json.dumps({**good, "id": "x1", "test_error": "n/a"}) + "\n")
        f.write(json.dumps({k: v for k, v in {**good, "id": "x2"}.items() if k != "folder"}) + "\n")
    r = invoke("report", folder)
    assert r.exit_code == 0, r.output
    assert "2 unreadable line(s) in results.jsonl were skipped" in r.output


# ---- messages and logs ------------------------------------------------------------------------

def test_on_50_images_the_ablation_names_the_validation_size(tmp_path, capsys, monkeypatch):
    data = npz(tmp_path / "d.npz", np.arange(50) % 2, n=50)
    code, _, err = run_main(["ablate", "--data", data, "--val-size", "10000", "--out",
                             tmp_path / "g"], capsys, monkeypatch)
    one_line(code, err, 2, "'--val-size': 10,000 leaves no training images")


def test_the_same_mistake_exits_2_in_finetune_and_ablate(tmp_path, capsys, monkeypatch):
    lines = []
    for command in ("finetune", "ablate"):
        code, _, err = run_main([command, *SLICE, "--labels", "5", "--out", tmp_path / command],
                                capsys, monkeypatch)
        lines.append(one_line(code, err, 2, "'--labels': 5 is smaller than the 10 classes"))


@pytest.mark.parametrize("command", ["pretrain", "ablate"])
def test_continue_with_quotes_paths_with_spaces(command, tmp_path, capsys, monkeypatch):
    import stackae.ablate as A
    import stackae.runner as R

    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(R, "run_pretrain", interrupted)
    monkeypatch.setattr(A, "run_cells", interrupted)
    out = tmp_path / "my runs" / "it's here"
    extra = ["--labels", "20"] if command == "ablate" else []
    code, _, err = run_main([command, *SLICE, *extra, "--layers", "8", "--out", out], capsys,
                            monkeypatch)
    line = one_line(code, err, 1, "Continue with: ")
    assert shlex.split(line.split("Continue with: ")[1]) == ["stackae", command, "--out", str(out),
                                                            "--resume"]


def test_a_resumed_run_logs_read_as_one_run(tmp_path, capsys, monkeypatch):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    out = tmp_path / "p"
    args = ["pretrain", *SLICE, "--layers", "16,8", "--epochs", "2", "-q", "--out", out]
    assert invoke(*args).exit_code == 0
    first = json.loads((out / "config.json").read_text())["provenance"]
    for name in ("layer2.pt", "stack.pt"):  # killed after logging layer 2, before saving it
        (out / name).unlink()
    code, _, err = run_main(["pretrain", "--out", out, "--resume", "-q"], capsys, monkeypatch)
    assert code == 0, err
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["stage"], r.get("layer"), r["step"]) for r in records]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 4
    events = list(out.glob("events.out.tfevents.*"))
    assert len(events) == 1
    steps = [(v.tag, e.step) for e in EventFileLoader(str(events[0])).Load()
             for v in e.summary.value if v.tag.endswith("/recon_loss")]
    assert sorted(steps) == [("pretrain/layer1/recon_loss", 1), ("pretrain/layer1/recon_loss", 2),
                             ("pretrain/layer2/recon_loss", 1), ("pretrain/layer2/recon_loss", 2)]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["provenance"] == first  # the original argv and time are kept
    assert len(cfg["resumed"]) == 1 and "--resume" in cfg["resumed"][0]["argv"]


def test_a_layer_saved_before_a_setting_existed_resumes_as_that_settings_default(tmp_path):
    """layer1.pt written by a version without --linear-code: it trained as the default (no
    linear code), so a resume with the default takes it and one with the setting on refuses.
    The resumed stack's time counts the reloaded layer's."""
    out = tmp_path / "p"
    args = ("--layers", "16,8", "--epochs", "1")
    assert invoke("pretrain", *SLICE, *args, "-q", "--out", out).exit_code == 0
    for name in ("layer2.pt", "stack.pt"):  # as if killed in layer 2
        (out / name).unlink()
    ck = torch.load(out / "layer1.pt", weights_only=True)
    del ck["config"]["linear_code"]
    ck["metrics"]["seconds"] = 1000.0  # as if layer 1 had taken long
    torch.save(ck, out / "layer1.pt")
    r = invoke("pretrain", *SLICE, *args, "-q", "--out", out, "--resume", "--linear-code")
    assert r.exit_code != 0 and "linear" in r.output, r.output
    r = invoke("pretrain", *SLICE, *args, "-q", "--out", out, "--resume")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())  # both processes' time
    assert 1000 < summary["seconds"] < 1100 and summary["layers"][0]["seconds"] == 1000
