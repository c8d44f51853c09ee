"""Seeds fine-tuned together (stacked parameters + vmap) end as separate `finetune()` runs do: same
weights, curves and model selection to float rounding, on a slice of real MNIST."""
import json
import math

import pytest
import torch
from torch.testing import assert_close

from stackae import ablate as A
from stackae.checkpoint import load_stack
from stackae.config import ConfigError, DataConfig, FinetuneConfig, PretrainConfig
from stackae.grid import AblateConfig, expand
from stackae.data import label_subset, load
from stackae.finetune import finetune
from stackae.multiseed import finetune_seeds
from stackae.network import assemble
from stackae.runner import run_pretrain

CPU = torch.device("cpu")
SEEDS = (0, 1, 2)
SPLIT = dict(train_size=300, val_size=200, device="cpu")
TOL = dict(rtol=1e-4, atol=1e-5)


class Silent:
    """A RunLog that writes nothing but keeps the learning rate of each epoch."""

    def __init__(self):
        self.lrs = []

    def scalars(self, step, values, **kwargs):
        self.lrs.append(values["finetune/lr"])

    def progress(self, line):
        pass


@pytest.fixture(scope="module")
def datas():
    """One data split per seed, as ablate loads them."""
    return [load(DataConfig(**SPLIT, seed=s), CPU) for s in SEEDS]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, datas):
    out = tmp_path_factory.mktemp("stack")
    run_pretrain(PretrainConfig(**SPLIT, layers=(32, 16), epochs=(1,)), out, CPU, quiet=True,
                 data=datas[0])
    return load_stack(out / "stack.pt", datas[0].input_dim)


def both_ways(datas, stack=None, **over):
    """Each seed fine-tuned alone with finetune(), then all together with finetune_seeds()."""
    settings = dict(SPLIT, layers=(32, 16), labels="100", epochs=3, batch_size=32,
                    min_epoch_examples=300)
    cfgs = [FinetuneConfig(**{**settings, **over}, seed=s) for s in SEEDS]
    idxs = [label_subset(d.train_y, c.label_budget, d.n_classes, c.seed)
            for c, d in zip(cfgs, datas)]

    def models():
        return [assemble(stack, input_dim=d.input_dim, n_classes=d.n_classes, widths=c.layers,
                         activation=c.activation, dropout=c.dropout, seed=c.seed)
                for c, d in zip(cfgs, datas)]
    alone, together = models(), models()
    logs = [Silent() for _ in SEEDS]
    separate = [finetune(c, d, m, log, "init", i)
                for c, d, m, i, log in zip(cfgs, datas, alone, idxs, logs)]
    batched_logs = [Silent() for _ in SEEDS]
    batched = finetune_seeds(cfgs, datas, together, ["init"] * 3, idxs, batched_logs)
    for r, log in zip(separate + batched, logs + batched_logs):
        r["lrs"] = log.lrs
    return alone, separate, together, batched


def assert_same_runs(alone, separate, together, batched):
    for m1, r1, m2, r2 in zip(alone, separate, together, batched):
        assert_close(m2.state_dict(), m1.state_dict(), **TOL)
        assert r2.keys() == r1.keys()
        assert (r2["best_epoch"], r2["epochs_run"], r2["labels"]) == \
            (r1["best_epoch"], r1["epochs_run"], r1["labels"])
        assert_close(r2["curves"], r1["curves"], **TOL)
        assert r2["lrs"] == pytest.approx(r1["lrs"])
        assert_close(r2["test_error"], r1["test_error"], **TOL)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 1e-3)])
@pytest.mark.parametrize("pretrained", [False, True])
def test_batched_seeds_match_separate_runs(datas, stack, pretrained, optimizer, lr):
    runs = both_ways(datas, stack if pretrained else None, optimizer=optimizer, lr=lr,
                     weight_decay=1e-4)
    assert_same_runs(*runs)
    assert len({r["test_error"] for r in runs[3]}) > 1  # the seeds really are different runs


def test_cosine_schedule_decays_to_zero_and_batched_seeds_follow_it(datas):
    runs = both_ways(datas, optimizer="adam", lr=1e-3, lr_schedule="cosine", epochs=4)
    assert_same_runs(*runs)
    lrs = runs[1][0]["lrs"]  # after each epoch: 300 examples = 10 batches of 32 per epoch, 40 in all
    assert lrs == pytest.approx([0.5e-3 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3, 4)],
                                abs=1e-12)
    constant = both_ways(datas, optimizer="adam", lr=1e-3, epochs=4)
    assert constant[1][0]["lrs"] == [1e-3] * 4
    assert runs[1][0]["curves"] != constant[1][0]["curves"]


def test_patience_stops_each_seed_on_its_own(datas):
    runs = both_ways(datas, epochs=8, lr=0.5, patience=1)
    assert_same_runs(*runs)
    assert any(r["epochs_run"] < 8 for r in runs[3])


def test_frozen_encoder_trains_only_the_head(datas, stack):
    alone, separate, together, batched = both_ways(datas, stack, freeze_encoder=True)
    assert_same_runs(alone, separate, together, batched)
    for m in together:
        assert torch.equal(m[0].weight, stack["layers"][0]["weight"])


def test_dropout_runs_with_its_own_masks(datas):
    _, _, _, batched = both_ways(datas, dropout=0.2, epochs=1)
    assert all(0 <= r["test_error"] < 0.9 for r in batched)


def test_seeds_that_differ_in_more_than_seed_are_refused(datas):
    cfgs = [FinetuneConfig(**SPLIT, layers=(8,), labels="100", seed=s, lr=lr)
            for s, lr in ((0, 0.1), (1, 0.2))]
    models = [assemble(None, input_dim=784, n_classes=10, widths=(8,), activation="sigmoid")] * 2
    with pytest.raises(ValueError, match="lr"):
        finetune_seeds(cfgs, datas[:2], models, ["x"] * 2, [torch.arange(100)] * 2, [Silent()] * 2)
    with pytest.raises(ConfigError) as e:
        AblateConfig(seed_batch=0)
    assert e.value.name == "seed_batch"


def test_ablate_seed_batch_gives_the_cells_of_one_at_a_time(tmp_path):
    tiny = dict(inits=("denoising", "random"), seeds=SEEDS, labels=("20",), layers=(16,),
                **SPLIT, pretrain_epochs=(1,), finetune_epochs=2, min_epoch_examples=300)
    lines = {}
    for size in (1, 3):
        cfg = AblateConfig(**tiny, seed_batch=size)
        out = tmp_path / f"batch{size}"
        cells = expand(cfg)
        A.start(cfg, out, cells, A.data_sizes(cfg), CPU)
        said = []
        assert A.run_cells(cfg, out, cells, CPU, said.append) == {"ran": 6, "skipped": 0}
        assert sum("3 seeds together" in line for line in said) == (6 if size == 3 else 0)
        lines[size] = {l["id"]: l for l in
                       map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert lines[1].keys() == lines[3].keys() == {c.id for c in cells}
    one, three = (tmp_path / f"batch{n}" / "runs" / "finetune" for n in (1, 3))
    for cell_id, line in lines[1].items():
        assert line["best_epoch"] == lines[3][cell_id]["best_epoch"]
        assert_close(lines[3][cell_id]["test_error"], line["test_error"], **TOL)
        m1, m3 = (torch.load(d / cell_id / "model.pt", weights_only=True) for d in (one, three))
        assert_close(m3["state"], m1["state"], **TOL)
        assert m3.keys() == m1.keys()
        assert [m3[k] for k in ("widths", "activation", "init")] == \
            [m1[k].replace("batch1", "batch3") if k == "init" else m1[k]
             for k in ("widths", "activation", "init")]
        files = [sorted(p.name for p in (d / cell_id).iterdir() if not p.name.startswith("events"))
                 for d in (one, three)]
        assert files[0] == files[1]
    # resume: finished cells are skipped; two killed cells of one arm are redone together
    for s in (0, 2):
        (three / f"random-d1-n20-s{s}" / "result.json").unlink()
    said = []
    assert A.run_cells(cfg, out, cells, CPU, said.append) == {"ran": 2, "skipped": 4}
    assert sum("2 seeds together" in line for line in said) == 2
    redone = json.loads((three / "random-d1-n20-s2" / "result.json").read_text())
    assert_close(redone["test_error"], lines[1]["random-d1-n20-s2"]["test_error"], **TOL)
