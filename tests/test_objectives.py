"""Each layer objective pretrains and fine-tunes through the CLI; mixed stacks; the unrolled AE."""
import json
import math

import pytest
import torch

from conftest import SLICE, invoke
from stackae.autoencoders import Layer


@pytest.mark.parametrize("objective,extra", [
    ("plain", []), ("denoising", ["--corruption", "salt-pepper"]),
    ("denoising", ["--corruption", "gaussian", "--noise", "0.3"]),
    ("sparse", ["--sparsity-penalty", "l1", "--sparsity-weight", "0.01"]), ("sparse", []),
    ("contractive", []), ("rbm", ["--persistent", "--cd-k", "2", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.5",
             "--batch-size", "32"]),
])
def test_objective_pretrains_and_finetunes(objective, extra, tmp_path):
    p, f = tmp_path / "p", tmp_path / "f"
    r = invoke("pretrain", *SLICE, "--layers", "64,32", "--epochs", "2", "--objective", objective,
               *extra, "-q", "--out", p)
    assert r.exit_code == 0, r.output
    summary = json.loads((p / "summary.json").read_text())
    assert [l["objective"] for l in summary["layers"]] == [objective, objective]
    hist = [json.loads(l) for l in (p / "metrics.jsonl").read_text().splitlines()
            if "pretrain/layer1/recon_loss" in l]
    assert hist[1]["pretrain/layer1/recon_loss"] < hist[0]["pretrain/layer1/recon_loss"]
    r = invoke("finetune", *SLICE, "--init", p / "stack.pt", "--epochs", "2", "--dropout", "0.2",
               "--optimizer", "adam", "--lr", "0.001",
               "-q", "--out", f)
    assert r.exit_code == 0, r.output
    # 2 short epochs on 1,000 labels: well below chance (0.9) is what a working path shows here
    assert json.loads((f / "result.json").read_text())["test_error"] < 0.7


def test_mixed_stack_rbm_below_relu_layers(tmp_path):
    p = tmp_path / "p"
    r = invoke("pretrain", *SLICE, "--layers", "64,32,16", "--activation", "relu", "--objective",
               "rbm,denoising,contractive", "--epochs", "1", "--noise", "0.2", "-q", "--out", p)
    assert r.exit_code == 0, r.output
    stack = torch.load(p / "stack.pt", weights_only=True)
    assert [l["objective"] for l in stack["layers"]] == ["rbm", "denoising", "contractive"]
    assert [l["activation"] for l in stack["layers"]] == ["sigmoid", "relu", "relu"]
    assert stack["config"]["objective"] == ["rbm", "denoising", "contractive"]
    r = invoke("finetune", *SLICE, "--init", p / "stack.pt", "--epochs", "1", "-q", "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output


def test_gaussian_rbm_standardisation_is_folded_into_exported_weights():
    torch.manual_seed(0)
    layer = Layer(1, 6, 4, "sigmoid", output="linear", standardize=True)
    layer.init_slice(0, torch.Generator().manual_seed(0))
    layer.in_mean.copy_(torch.randn(1, 6))
    layer.in_std.copy_(torch.rand(1, 6) + 0.5)
    x = torch.randn(10, 6)
    e = layer.export(0)
    assert torch.allclose(torch.sigmoid(x @ e["weight"].T + e["bias"]), layer.encode(x)[0],
                          atol=1e-6)


def test_gaussian_rbm_first_layer_trains(tmp_path):
    r = invoke("pretrain", *SLICE, "--layers", "32", "--objective", "rbm", "--rbm-visible",
               "gaussian", "--epochs", "3", "--optimizer", "sgd", "--lr", "0.01", "-q",
               "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    history = torch.load(tmp_path / "p" / "stack.pt", weights_only=True)["metrics"][0]["history"]
    val = [h["val_recon_loss"] for h in history]
    assert all(math.isfinite(v) for v in val)
    assert val[-1] < val[0], val  # contrastive divergence lowers the reconstruction error
    # pixels that hardly vary in the 1,000 training images (std under 5% of the widest's) are
    # centred, not scaled by their tiny spread, so the validation images' values there stay sane
    # (dividing by the spread, validation loss was 16 times the training loss here)
    assert val[-1] < 1.2 * history[-1]["train_recon_loss"], (val, history[-1])
    std = torch.load(tmp_path / "p" / "layer1.pt", weights_only=True)["state"]["in_std"]
    assert std[0] == 1 and std.min() > 0.02  # (a corner pixel; no spread near 0 kept)


def test_unrolled_autoencoder_improves_and_stays_a_stack(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    p = tmp_path / "p"
    r = invoke("pretrain", *SLICE, "--layers", "64,16", "--epochs", "2", "--unroll-epochs", "2",
               "-q", "--out", p)
    assert r.exit_code == 0, r.output
    summary = json.loads((p / "summary.json").read_text())
    hist = torch.load(p / "stack.pt", weights_only=True)["unrolled"]["history"]
    assert len(hist) == 2 and hist[1]["val_recon_loss"] < hist[0]["val_recon_loss"]
    assert summary["unrolled"]["val_recon_loss"] == hist[1]["val_recon_loss"]
    assert "(epoch 2 of 2, the lowest; kept)" in r.output, r.output
    # a run finished before the unrolled stage kept its best epoch still reports on --resume
    del summary["unrolled"]["best_epoch"]
    (p / "summary.json").write_text(json.dumps(summary))
    r = invoke("pretrain", *SLICE, "--layers", "64,16", "--epochs", "2", "--unroll-epochs", "2",
               "-q", "--out", p, "--resume")
    assert r.exit_code == 0 and "unrolled deep autoencoder: val recon loss" in r.output, r.output
    greedy = torch.load(p / "layer1.pt", weights_only=True)["state"]["encoder.weight"]
    assert not torch.equal(greedy, torch.load(p / "stack.pt", weights_only=True)["layers"][0]["weight"])
    ea = EventAccumulator(str(p), size_guidance={"images": 0}).Reload()
    assert "unroll/val_recon_loss" in ea.Tags()["scalars"]
    assert "unroll/reconstructions" in ea.Tags()["images"]
    assert (p / "projector_config.pbtxt").exists()
    meta = next(p.glob("*/*/metadata.tsv")).read_text().split()
    assert len(meta) == 2000 and set(meta) <= set("0123456789")
    r = invoke("finetune", *SLICE, "--init", p / "stack.pt", "--epochs", "1", "-q", "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output
    # interrupted after the unrolled stage logged its codes: --resume redoes it and replaces them
    (p / "stack.pt").unlink()
    r = invoke("pretrain", *SLICE, "--layers", "64,16", "--epochs", "2", "--unroll-epochs", "2",
               "-q", "--out", p, "--resume")
    assert r.exit_code == 0 and "warning" not in r.output.lower(), r.output
    assert len(list(p.glob("*/*/metadata.tsv"))) == 1


def test_the_deep_autoencoders_recipe_a_linear_code_and_decoders_untied_for_unrolling(tmp_path):
    """Hinton & Salakhutdinov 2006: RBMs with a linear (Gaussian-hidden) top layer, unrolled
    with each decoder a copy of its W^T that fine-tuning then trains apart."""
    import stackae
    p = tmp_path / "p"
    r = invoke("pretrain", *SLICE, "--layers", "64,8", "--objective", "rbm", "--epochs", "2",
               "--no-tied", "--linear-code", "--unroll-epochs", "2", "-q", "--out", p)
    assert r.exit_code == 0, r.output
    stack = torch.load(p / "stack.pt", weights_only=True)
    assert [l["activation"] for l in stack["layers"]] == ["sigmoid", "linear"]
    for k in (1, 2):  # greedy layers: the decoder is the RBM's own transpose
        state = torch.load(p / f"layer{k}.pt", weights_only=True)["state"]
        assert torch.equal(state["decoder_weight"], state["encoder.weight"].T)
    for layer in stack["layers"]:  # unrolled: trained apart
        assert (layer["decoder_weight"] - layer["weight"].T).abs().max() > 1e-4
    hist = stack["unrolled"]["history"]
    assert hist[1]["val_recon_loss"] < hist[0]["val_recon_loss"]
    s = stackae.load_stack(p)
    x = stackae.load_data("mnist", train_size=1000, val_size=500).test_x[:200]
    codes = s.encoder(x)
    assert codes.min() < 0 and isinstance(s.encoder[-1], torch.nn.Identity)  # unbounded code
    assert s.reconstruct(x).shape == x.shape
    r = invoke("finetune", *SLICE, "--init", p / "stack.pt", "--epochs", "1", "-q",
               "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output
    # its config.json reruns (--activation stands for no mixed stack: its default is recorded)
    r = invoke("finetune", "--config", tmp_path / "f" / "config.json", "-q", "--out", tmp_path / "h")
    assert r.exit_code == 0, r.output
    r = invoke("finetune", "--out", tmp_path / "f", "--resume")
    assert r.exit_code == 0 and "already finished" in r.output, r.output
    for flag in ("--init", "--like"):  # another activation than the stack's is refused
        r = invoke("finetune", *SLICE, flag, p / "stack.pt", "--activation", "relu", "-q",
                   "--out", tmp_path / "x")
        assert r.exit_code == 2 and "the stack" in r.output and "is sigmoid,linear" in r.output
    r = invoke("finetune", *SLICE, "--like", p / "stack.pt", "--init-scheme", "xavier",
               "--epochs", "1", "-q", "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    model = torch.load(tmp_path / "g" / "model.pt", weights_only=True)
    assert model["activation"] == ["sigmoid", "linear"]


@pytest.mark.parametrize("args", [
    ("--layers", "16", "--objective", "rbm", "--rbm-visible", "gaussian"),
    ("--layers", "16,8", "--objective", "denoising,rbm", "--activation", "relu"),
])
def test_a_linear_code_rbm_over_gaussian_visible_units_is_refused(args, tmp_path):
    """Gaussian hidden over Gaussian visible units: no proper model (its energy is unbounded
    below once W grows), so the combination is refused before anything runs."""
    r = invoke("pretrain", *SLICE, *args, "--linear-code", "-q", "--out", tmp_path / "p")
    assert r.exit_code == 2 and "needs binary visible units" in r.output, r.output
    assert not (tmp_path / "p").exists()
    ok = invoke("pretrain", *SLICE, "--layers", "16,8", "--objective", "rbm", "--activation",
                "relu", "--linear-code", "--epochs", "1", "-q", "--out", tmp_path / "q")
    assert ok.exit_code == 0, ok.output  # RBM layers below are sigmoid: binary visible units
