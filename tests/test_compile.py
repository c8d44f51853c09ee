"""How a step executes: --compile (torch.compile; on CUDA replayed as CUDA graphs) trains the same
networks as the eager step, to float rounding, for fine-tuning and pretraining; an epoch's last,
shorter batch runs eagerly (the CUDA cases run only where a GPU is present); --precision tf32
holds for the run only."""
import pytest
import torch
from torch._dynamo.utils import counters
from torch.testing import assert_close

from stackae.config import DataConfig, FinetuneConfig, PretrainConfig
from stackae.data import label_subset, load
from stackae.finetune import finetune
from stackae.network import assemble
from stackae.pretrain import pretrain
from test_stacked import Silent, folder

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))]
SPLIT = dict(train_size=300, val_size=200)
TOL = dict(rtol=1e-4, atol=1e-5)


def compiled_whole(run):
    """run() with torch.compile's counters watched: the step was compiled, as one graph."""
    counters.clear()
    out = run()
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_fine_tuning_matches_eager(device):
    datas = [load(DataConfig(**SPLIT, seed=s, device=device), torch.device(device))
             for s in (0, 1)]

    def run(compile):
        # 300 examples an epoch in batches of 32: nine compiled steps and one eager one of 12
        cfgs = [FinetuneConfig(**SPLIT, device=device, layers=(32, 16), labels="100", epochs=3,
                               batch_size=32, min_epoch_examples=300, dropout=0.2, seed=s,
                               compile=compile) for s in (0, 1)]
        models = [assemble(None, input_dim=784, n_classes=10, widths=c.layers,
                           activation="sigmoid", dropout=c.dropout, seed=c.seed, scheme="xavier")
                  for c in cfgs]
        idxs = [label_subset(d.train_y, 100, 10, c.seed) for c, d in zip(cfgs, datas)]
        return models, finetune(cfgs, datas, models, ["x"] * 2, idxs, [Silent(), Silent()])
    eager, compiled = run(False), compiled_whole(lambda: run(True))
    for m1, r1, m2, r2 in zip(*eager, *compiled):
        assert_close(m2.state_dict(), m1.state_dict(), **TOL)
        assert_close(r2["curves"], r1["curves"], **TOL)
        assert r2["best_epoch"] == r1["best_epoch"]


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_pretraining_matches_eager(device, tmp_path):
    datas = [load(DataConfig(**SPLIT, seed=s, device=device), torch.device(device))
             for s in (0, 1)]

    def run(compile):
        cfgs = [PretrainConfig(**SPLIT, device=device, layers=(24,), epochs=(2,), batch_size=64,
                               seed=s, compile=compile) for s in (0, 1)]
        return pretrain(cfgs, datas, [folder(tmp_path / f"{compile}{c.seed}") for c in cfgs],
                        [Silent(), Silent()])
    for a, b in zip(run(False), compiled_whole(lambda: run(True))):
        s1, s2 = (torch.load(x["stack"], weights_only=True) for x in (a, b))
        assert_close(s2["layers"][0]["weight"], s1["layers"][0]["weight"], **TOL)
        assert_close(b["layers"][0]["val_recon_loss"], a["layers"][0]["val_recon_loss"], **TOL)


def test_tf32_precision_holds_for_the_run_only():
    from stackae.train import matmul_precision
    before = torch.backends.cuda.matmul.allow_tf32
    with matmul_precision("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32
    with matmul_precision("float32"):
        assert torch.backends.cuda.matmul.allow_tf32 == before
    assert torch.backends.cuda.matmul.allow_tf32 == before
