"""Pretrain -> finetune through the library and the CLI on a slice of real MNIST."""
import json

import pytest
import torch

import stackae

from conftest import SLICE, invoke
from stackae.config import FinetuneConfig, PretrainConfig
from stackae.pretrain import encode_all
from stackae.runner import run_finetune, run_pretrain

SMALL = dict(train_size=1000, val_size=500, device="cpu", layers=(64, 32), epochs=(2,))


def _layers(path):
    return [(l["weight"], l["bias"]) for l in torch.load(path, weights_only=True)["layers"]]


def test_same_seed_same_weights_different_seed_differs(tmp_path):
    run_pretrain(PretrainConfig(**SMALL, seed=5), tmp_path / "a", torch.device("cpu"), quiet=True)
    run_pretrain(PretrainConfig(**SMALL, seed=5), tmp_path / "b", torch.device("cpu"), quiet=True)
    run_pretrain(PretrainConfig(**SMALL, seed=6), tmp_path / "c", torch.device("cpu"), quiet=True)
    a, b, c = (_layers(tmp_path / n / "stack.pt") for n in "abc")
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])


def test_lower_layers_are_frozen_while_upper_trains(tmp_path, monkeypatch):
    """Layer 1's weights after the whole stack equal layer1.pt, saved before layer 2 trained."""
    import stackae.pretrain as P
    seen = []
    orig = P.train_layer

    def spy(cfg, k, layer, x, x_val, log):
        seen.append((k, x.requires_grad))
        return orig(cfg, k, layer, x, x_val, log)
    monkeypatch.setattr(P, "train_layer", spy)
    run_pretrain(PretrainConfig(**SMALL), tmp_path / "r", torch.device("cpu"), quiet=True)
    l1 = torch.load(tmp_path / "r" / "layer1.pt", weights_only=True)["state"]["encoder.weight"]
    stack = torch.load(tmp_path / "r" / "stack.pt", weights_only=True)
    assert torch.equal(l1, stack["layers"][0]["weight"])
    assert seen == [(0, False), (1, False)]  # layer 2 trains on cached codes, no graph to layer 1


def test_codes_are_the_frozen_encoder_output():
    from stackae.autoencoders import Layer
    layer = Layer(2, 10, 4).requires_grad_(False)
    for i in range(2):
        layer.init_slice(i, torch.Generator().manual_seed(i))
    x = torch.rand(2, 9000, 10)  # more than one chunk
    assert torch.allclose(encode_all(layer, x), layer.encode(x))


def test_resume_after_layer_one_gives_identical_stack(tmp_path):
    cfg = PretrainConfig(**SMALL, seed=3)
    run_pretrain(cfg, tmp_path / "full", torch.device("cpu"), quiet=True)
    run_pretrain(cfg, tmp_path / "cut", torch.device("cpu"), quiet=True)
    for name in ("layer2.pt", "stack.pt"):  # as if killed after layer 1 was written
        (tmp_path / "cut" / name).unlink()
    run_pretrain(cfg, tmp_path / "cut", torch.device("cpu"), quiet=True)
    for x, y in zip(_layers(tmp_path / "full" / "stack.pt"), _layers(tmp_path / "cut" / "stack.pt")):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


def test_pretrained_and_random_arms_share_head_split_and_shape(tmp_path):
    run_pretrain(PretrainConfig(**SMALL), tmp_path / "p", torch.device("cpu"), quiet=True)
    stack = str(tmp_path / "p" / "stack.pt")
    common = dict(train_size=1000, val_size=500, device="cpu", epochs=0)
    pre = run_finetune(FinetuneConfig(init=stack, **common), tmp_path / "f1", torch.device("cpu"), True)
    rnd = run_finetune(FinetuneConfig(init="random", like=stack, **common), tmp_path / "f2",
                       torch.device("cpu"), True)
    m1 = torch.load(tmp_path / "f1" / "model.pt", weights_only=True)
    m2 = torch.load(tmp_path / "f2" / "model.pt", weights_only=True)
    assert m1["widths"] == m2["widths"] == [64, 32]
    assert torch.equal(m1["state"]["4.weight"], m2["state"]["4.weight"])  # same seeded head
    assert not torch.equal(m1["state"]["0.weight"], m2["state"]["0.weight"])
    assert torch.equal(m1["state"]["0.weight"], torch.load(stack, weights_only=True)["layers"][0]["weight"])
    assert pre["labels"] == rnd["labels"] == 1000


def test_freeze_encoder_trains_only_the_head(tmp_path):
    run_pretrain(PretrainConfig(**SMALL), tmp_path / "p", torch.device("cpu"), quiet=True)
    stack = str(tmp_path / "p" / "stack.pt")
    run_finetune(FinetuneConfig(init=stack, train_size=1000, val_size=500, device="cpu", epochs=1,
                                freeze_encoder=True), tmp_path / "f", torch.device("cpu"), True)
    m = torch.load(tmp_path / "f" / "model.pt", weights_only=True)["state"]
    s = torch.load(stack, weights_only=True)["layers"]
    assert torch.equal(m["0.weight"], s[0]["weight"]) and torch.equal(m["2.weight"], s[1]["weight"])


def test_cli_pretrain_finetune_both_arms_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    p, f1, f2 = tmp_path / "p", tmp_path / "pre", tmp_path / "rand"
    r = invoke("pretrain", *SLICE, "--layers", "100,50", "--epochs", "2", "--quiet", "--out", p)
    assert r.exit_code == 0, r.output
    assert "stack:" in r.output
    for name in ("config.json", "metrics.jsonl", "layer1.pt", "layer2.pt", "stack.pt", "summary.json"):
        assert (p / name).exists(), name
    r = invoke("finetune", *SLICE, "--init", p / "stack.pt", "--epochs", "3", "-q", "--out", f1)
    assert r.exit_code == 0, r.output
    r = invoke("finetune", *SLICE, "--init", "random", "--like", p / "stack.pt", "--epochs", "3",
               "-q", "--out", f2)
    assert r.exit_code == 0, r.output
    res = [json.loads((f / "result.json").read_text()) for f in (f1, f2)]
    for x in res:
        assert 0 <= x["test_error"] < 0.5 and x["best_epoch"] >= 1 and len(x["curves"]["val_error"]) == 3
        assert "test_error" not in x["curves"]  # the test set is read once, at the end
    for f, x in zip((f1, f2), res):  # ...on the selected model, the one saved
        model = stackae.Classifier(f).model
        d = stackae.load_data(train_size=1000, val_size=500, seed=0)
        wrong = (model(d.test_x).argmax(1) != d.test_y).float().mean().item()
        assert x["test_error"] == pytest.approx(wrong)
    assert res[0]["init"].startswith("pretrained:") and res[1]["init"] == "random:default"
    # TensorBoard: scalars, images and histograms of pretraining; curves of fine-tuning
    ea = EventAccumulator(str(p), size_guidance={"images": 0, "histograms": 0}).Reload()
    tags = ea.Tags()
    assert {"pretrain/layer1/recon_loss", "pretrain/layer1/val_recon_loss",
            "pretrain/layer2/recon_loss"} <= set(tags["scalars"])
    assert len(ea.Scalars("pretrain/layer1/recon_loss")) == 2
    assert {"pretrain/layer1/filters", "pretrain/layer1/reconstructions"} <= set(tags["images"])
    assert "pretrain/layer1/weights" in tags["histograms"]
    ea = EventAccumulator(str(f1)).Reload()
    for tag in ("finetune/train_loss", "finetune/val_error", "hparam/test_error"):
        assert tag in ea.Tags()["scalars"], tag
    assert "finetune/test_error" not in ea.Tags()["scalars"]
    assert [e.value for e in ea.Scalars("finetune/val_error")] == pytest.approx(
        res[0]["curves"]["val_error"], rel=1e-6)
    assert not any(x.is_dir() for x in f1.iterdir())  # hparams in the run's own folder
    lines = [json.loads(l) for l in (f1 / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if "finetune/val_error" in l] == [1, 2, 3]


def test_config_json_roundtrip_reruns_identically(tmp_path):
    r = invoke("pretrain", *SLICE, "--layers", "40", "--epochs", "1", "--noise", "0.1", "-q",
               "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["noise"] == [0.1] and cfg["layers"] == [40] and cfg["seed"] == 0
    assert {"stackae", "torch", "device", "git_commit"} <= set(cfg["provenance"])
    r = invoke("pretrain", "--config", tmp_path / "a" / "config.json", "-q", "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b" / "config.json").read_text())["noise"] == [0.1]
    assert all(torch.equal(x[0], y[0]) for x, y in
               zip(_layers(tmp_path / "a" / "stack.pt"), _layers(tmp_path / "b" / "stack.pt")))
    # flags override the file
    r = invoke("pretrain", "--config", tmp_path / "a" / "config.json", "--noise", "0.2", "-q",
               "--out", tmp_path / "c")
    assert json.loads((tmp_path / "c" / "config.json").read_text())["noise"] == [0.2]


def test_user_idx_data_through_cli(tmp_path):
    from conftest import make_idx_folder
    folder = make_idx_folder(tmp_path / "d", gz=True)
    r = invoke("pretrain", "--data", folder, "--val-size", "50", "--layers", "16", "--epochs", "1",
               "-q", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    r = invoke("finetune", "--data", folder, "--val-size", "50", "--init", tmp_path / "p" / "stack.pt",
               "--epochs", "2", "-q", "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "f" / "result.json").read_text())["labels"] == 250


@pytest.mark.parametrize("cmd", [[], ["pretrain"], ["finetune"]])
def test_help(cmd):
    r = invoke(*cmd, "--help")
    assert r.exit_code == 0 and "Usage:" in r.output
    if cmd:
        assert "Examples:" in r.output and "[default:" in r.output
