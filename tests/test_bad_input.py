"""Every bad input ends in one line naming the culprit, exit 2 (usage) or 1 (runtime), no
traceback, and no run folder left behind."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SLICE, invoke, make_idx_folder, run_main, write_idx


class Evil:
    def __reduce__(self):
        return (print, ("this code ran",))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    out = tmp_path_factory.mktemp("stack") / "p"
    r = invoke("pretrain", *SLICE, "--layers", "20", "--epochs", "1", "-q", "--out", out)
    assert r.exit_code == 0, r.output
    return out / "stack.pt"


def bad_files(tmp: Path, stack) -> dict:
    """name -> (args, expected exit status, text the message must contain)"""
    cases = {}
    ok = make_idx_folder(tmp / "ok")

    def idx_case(name, mutate):
        f = make_idx_folder(tmp / name)
        mutate(f)
        return f
    magic = idx_case("magic", lambda f: (f / "train-images-idx3-ubyte").write_bytes(b"\x08\x03\0\0" + b"\0" * 40))
    trunc = idx_case("trunc", lambda f: (f / "t10k-images-idx3-ubyte").write_bytes(
        (f / "t10k-images-idx3-ubyte").read_bytes()[:-10]))
    count = idx_case("count", lambda f: write_idx(f / "train-labels-idx1-ubyte", np.zeros(299)))
    dims = idx_case("dims", lambda f: write_idx(f / "t10k-images-idx3-ubyte", np.zeros((100, 7, 7))))
    labels = idx_case("labels", lambda f: write_idx(f / "t10k-labels-idx1-ubyte", np.full(100, 9)))
    empty = tmp / "empty"
    empty.mkdir()
    cases.update({
        "idx bad magic": (["--data", magic], 1, "bad magic number"),
        "idx truncated": (["--data", trunc], 1, "truncated"),
        "idx count mismatch": (["--data", count], 1, "300 images but 299 labels"),
        "idx feature mismatch": (["--data", dims], 1, "features"),
        "idx test label unseen": (["--data", labels], 1, "class 9"),
        "folder without idx": (["--data", empty], 1, "no train images IDX file"),
        "missing data path": (["--data", tmp / "nope"], 2, "does not exist"),
    })
    rng = np.random.default_rng(0)

    def npz(name, **over):
        d = dict(x_train=rng.random((60, 16)).astype(np.float32), y_train=np.arange(60) % 3,
                 x_test=rng.random((20, 16)).astype(np.float32), y_test=np.arange(20) % 3)
        d.update(over)
        d = {k: v for k, v in d.items() if v is not None}
        np.savez(tmp / f"{name}.npz", **d)
        return tmp / f"{name}.npz"
    nan = rng.random((60, 16)).astype(np.float32)
    nan[3, 4] = np.nan
    garbage = tmp / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    objs = tmp / "obj.npz"
    np.savez(objs, x_train=np.array([{"a": 1}] * 60, dtype=object), y_train=np.zeros(60),
             x_test=np.zeros((2, 2)), y_test=np.zeros(2))
    cases.update({
        "npz missing key": (["--data", npz("mk", y_test=None)], 1, "lacks y_test"),
        "npz NaN": (["--data", npz("nan", x_train=nan)], 1, "NaN or Inf"),
        "npz out of range": (["--data", npz("big", x_test=rng.random((20, 16)) * 3)], 1,
                             "must be in [0, 1]"),
        "npz negative label": (["--data", npz("neg", y_train=np.arange(60) % 3 - 1)], 1, ">= 0"),
        "npz fractional label": (["--data", npz("frac", y_train=np.full(60, 0.5))], 1, "integers"),
        "npz empty": (["--data", npz("empty", x_test=np.zeros((0, 16)), y_test=np.zeros(0, int))], 1,
                      "empty"),
        "npz garbage": (["--data", garbage], 1, "not a readable .npz"),
        "npz object arrays": (["--data", objs], 1, "object (pickled) arrays"),
        "val-size too large": (["--data", ok, "--val-size", "300"], 2, "leaves no training images"),
        "train-size too large": ([*SLICE[:1], "99999"], 2, "'--train-size': 99,999 exceeds"),
    })
    return cases


OPTION_CASES = {
    "layer width zero": (["--layers", "100,0"], 2, "--layers"),
    "tf32 on a CPU": (["--precision", "tf32"], 2, "'--precision': tf32 is a CUDA tensor-core"),
    "layer width negative": (["--layers", "-5"], 2, "--layers"),
    "layer list malformed": (["--layers", "10,,x"], 2, "--layers"),
    "noise 1": (["--noise", "1.0"], 2, "[0, 1)"),
    "noise negative": (["--noise", "-0.1"], 2, "--noise"),
    "noise per-layer count": (["--layers", "10,10,10", "--noise", "0.1,0.2"], 2, "one per layer"),
    "epochs negative": (["--epochs", "-1"], 2, "--epochs"),
    "lr zero": (["--lr", "0"], 2, "--lr"),
    "batch size zero": (["--batch-size", "0"], 2, "--batch-size"),
    "unknown activation": (["--activation", "softsign"], 2, "--activation"),
    "unknown objective": (["--objective", "vae"], 2, "'vae' is not one of"),
    "val-size zero": (["--val-size", "0"], 2, "--val-size"),
    "train-size zero": (["--train-size", "0"], 2, "--train-size"),
    "momentum >= 1": (["--momentum", "1.5"], 2, "--momentum"),
    "rho outside (0,1)": (["--sparsity-target", "1.5"], 2, "rho must be in (0, 1)"),
    "beta negative": (["--sparsity-weight", "-1"], 2, "beta must be >= 0"),
    "cd-k zero": (["--cd-k", "0"], 2, "k must be >= 1"),
    "unknown device": (["--device", "tpu"], 2, "--device"),
}

FINETUNE_CASES = {
    # an option that does not fit the data is a usage error (2), as in ablate
    "labels below class count": (["--labels", "5"], 2, "smaller than the 10 classes"),
    "labels above data": (["--labels", "999999"], 2, "exceeds"),
    "labels not a number": (["--labels", "many"], 2, "--labels"),
    "dropout 1": (["--dropout", "1"], 2, "--dropout"),
    "init missing": (["--init", "nope.pt"], 2, "nope.pt does not exist"),
    "tf32 on a CPU": (["--precision", "tf32"], 2, "'--precision': tf32 is a CUDA tensor-core"),
}


def check(args, expect_code, expect_text, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    code, stdout, err = run_main([*args, "--out", out], capsys, monkeypatch)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == expect_code, err
    assert len(lines) == 1 and lines[0].startswith("Error:"), err
    assert expect_text in lines[0], lines[0]
    assert "Traceback" not in err + stdout
    assert not out.exists(), "a bad input left a run folder behind"
    if os.environ.get("STACKAE_BAD_INPUT_LOG"):  # the catalogue of messages, for the docs
        with open(os.environ["STACKAE_BAD_INPUT_LOG"], "a") as f:
            f.write(f"{code}\t{' '.join(map(str, args))}\t{lines[0]}\n")


@pytest.mark.parametrize("name", OPTION_CASES)
def test_bad_pretrain_option(name, tmp_path, capsys, monkeypatch):
    args, code, text = OPTION_CASES[name]
    check(["pretrain", *SLICE, *args], code, text, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("name", FINETUNE_CASES)
def test_bad_finetune_option(name, tmp_path, capsys, monkeypatch):
    args, code, text = FINETUNE_CASES[name]
    check(["finetune", *SLICE, "--epochs", "1", *args], code, text, tmp_path, capsys, monkeypatch)


def test_bad_data_files(tmp_path, capsys, monkeypatch, stack):
    cases = bad_files(tmp_path, stack)
    assert len(cases) >= 15
    for name, (args, code, text) in cases.items():
        args = args if "--data" in args else [*SLICE[:1], *args[1:]]
        extra = ["--val-size", "30"] if "--data" in args and "--val-size" not in args else []
        try:
            check(["pretrain", "--layers", "8", "--epochs", "1", *extra, *args], code, text,
                  tmp_path / name.replace(" ", "_"), capsys, monkeypatch)
        except AssertionError as e:
            raise AssertionError(f"case {name!r}: {e}")


def test_bad_config_files(tmp_path, capsys, monkeypatch):
    cases = {
        "unknown key": ('{"layers": [10], "colour": "blue"}', "unknown setting 'colour'"),
        "wrong type": ('{"layers": "big"}', "layers"),
        "wrong scalar type": ('{"epochs": [1], "batch_size": "many"}', "expected an integer"),
        "invalid json": ('{"layers": [10,', "not valid JSON"),
        "not an object": ('[1, 2]', "JSON object"),
        "bad choice": ('{"activation": "swish"}', "'swish' is not one of"),
    }
    for i, (name, (text, msg)) in enumerate(cases.items()):
        f = tmp_path / f"c{i}.json"
        f.write_text(text)
        check(["pretrain", *SLICE, "--config", f], 2, msg, tmp_path / f"r{i}", capsys, monkeypatch)
    check(["pretrain", "--config", tmp_path / "missing.json"], 2, "missing.json", tmp_path / "m",
          capsys, monkeypatch)


def test_bad_checkpoints(tmp_path, capsys, monkeypatch, stack):
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(stack.read_bytes()[:2000])
    text = tmp_path / "text.pt"
    text.write_text("hello")
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": "stackae-stack", "x": Evil()}, f)
    evil_zip = tmp_path / "evil2.pt"
    torch.save({"format": "stackae-stack", "x": Evil()}, evil_zip)
    layer = stack.parent / "layer1.pt"
    wrong_width = make_idx_folder(tmp_path / "d")
    cases = [
        (["--init", trunc], "corrupt or truncated"),
        (["--init", text], "corrupt"),
        (["--init", evil], "refused"),
        (["--init", evil_zip], "refused"),
        (["--init", layer], "expected a stack checkpoint"),
        (["--init", stack, "--data", wrong_width, "--val-size", "30"], "width 784, but the data have width 64"),
        (["--init", "random", "--like", text], "corrupt"),
    ]
    for i, (args, msg) in enumerate(cases):
        extra = [] if "--data" in args else SLICE
        check(["finetune", *extra, "--epochs", "1", *args], 1, msg, tmp_path / f"r{i}", capsys,
              monkeypatch)
    assert "this code ran" not in capsys.readouterr().out


def test_existing_output_folder_is_refused_and_kept(tmp_path, capsys, monkeypatch, stack):
    out = stack.parent
    before = sorted(p.name for p in out.iterdir())
    code, _, err = run_main(["pretrain", *SLICE, "--out", out], capsys, monkeypatch)
    assert code == 2 and "already exists; pass --resume" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == before


def test_divergence_names_stage_layer_epoch_and_keeps_finished_layers(tmp_path, capsys, monkeypatch):
    out = tmp_path / "div"
    code, _, err = run_main(["pretrain", *SLICE, "--layers", "30,30", "--activation", "relu",
                             "--epochs", "1,3", "--optimizer", "sgd", "--lr", "0.01,1e8", "-q",
                             "--out", out], capsys, monkeypatch)
    assert code == 1 and "diverged: layer 2, epoch 1" in err and "--lr" in err, err
    assert (out / "layer1.pt").exists() and not (out / "stack.pt").exists()
