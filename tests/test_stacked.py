"""K networks trained in one loop end as K separate runs do: same weights, curves and model
selection to float rounding, for fine-tuning (dropout included: every network draws its own masks)
and for pretraining (every objective), on a slice of real MNIST; and a grid's results do not depend
on how its cells were batched."""
import csv
import json
import math

import pytest
import torch
from torch.testing import assert_close

from stackae import ablate as A
from stackae import grid as G
from stackae.checkpoint import load_stack
from stackae.config import DataConfig, FinetuneConfig, PretrainConfig
from stackae.config_grid import AblateConfig
from stackae.data import label_subset, load
from stackae.finetune import finetune
from stackae.grid import expand
from stackae.network import assemble
from stackae.pretrain import pretrain
from stackae.report import write_report
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
        if "finetune/lr" in values:
            self.lrs.append(values["finetune/lr"])

    def progress(self, line):
        pass

    def histogram(self, *a):
        pass

    def image(self, *a):
        pass

    def embedding(self, *a):
        pass


def folder(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def both_ways(datas, stack=None, inits=None, lrs=None, per=None, prune=None, **over):
    """Each network fine-tuned alone (K = 1), then all together (K = 3); `lrs` gives each
    network its own learning rate, `per` its own value of other settings (as tuning trials have:
    {"dropout": (0.1, 0, 0.5)}), `prune` its own pruner."""
    settings = dict(SPLIT, layers=(32, 16), labels="100", epochs=3, batch_size=32,
                    min_epoch_examples=300)
    per = {**(per or {}), **({"lr": lrs} if lrs else {})}
    cfgs = [FinetuneConfig(**{**settings, **over, **{n: v[k] for n, v in per.items()}}, seed=s)
            for k, s in enumerate(SEEDS)]
    idxs = [label_subset(d.train_y, c.label_budget, d.n_classes, c.seed)
            for c, d in zip(cfgs, datas)]
    schemes = inits or ["default"] * len(cfgs)

    def models():
        return [assemble(stack, input_dim=d.input_dim, n_classes=d.n_classes, widths=c.layers,
                         activation=c.activation, dropout=c.dropout, seed=c.seed, scheme=s)
                for c, d, s in zip(cfgs, datas, schemes)]
    alone, together = models(), models()
    logs = [Silent() for _ in SEEDS]
    prune = prune or [None] * len(cfgs)
    separate = [finetune([c], [d], [m], ["init"], [i], [log], prune=[p])[0]
                for c, d, m, i, log, p in zip(cfgs, datas, alone, idxs, logs, prune)]
    batched_logs = [Silent() for _ in SEEDS]
    batched = finetune(cfgs, datas, together, ["init"] * 3, idxs, batched_logs, prune=prune)
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
def test_networks_together_match_separate_runs(datas, stack, pretrained, optimizer, lr):
    runs = both_ways(datas, stack if pretrained else None, optimizer=optimizer, lr=lr,
                     weight_decay=1e-4)
    assert_same_runs(*runs)
    assert len({r["test_error"] for r in runs[3]}) > 1  # the seeds really are different runs


def test_arms_of_different_inits_train_together(datas):
    """Random-init arms of different schemes share a loop (as ablate's arms of a budget do)."""
    runs = both_ways(datas, inits=["default", "xavier", "kaiming"])
    assert_same_runs(*runs)


def test_cosine_schedule_decays_to_zero_and_stacked_networks_follow_it(datas):
    runs = both_ways(datas, optimizer="adam", lr=1e-3, lr_schedule="cosine", epochs=4)
    assert_same_runs(*runs)
    lrs = runs[1][0]["lrs"]  # after each epoch: 300 examples = 10 batches of 32 per epoch, 40 in all
    assert lrs == pytest.approx([0.5e-3 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3, 4)],
                                abs=1e-12)
    constant = both_ways(datas, optimizer="adam", lr=1e-3, epochs=4)
    assert constant[1][0]["lrs"] == [1e-3] * 4
    assert runs[1][0]["curves"] != constant[1][0]["curves"]


def test_patience_stops_each_network_on_its_own(datas):
    runs = both_ways(datas, epochs=8, lr=0.5, patience=1)
    assert_same_runs(*runs)
    assert any(r["epochs_run"] < 8 for r in runs[3])


def test_once_most_networks_stopped_the_rest_train_on_as_a_narrower_loop(datas, monkeypatch):
    """Two of three networks pruned after epoch 2: the third trains on alone (a loop of K = 1
    rebuilt from its state), each network ends as it would alone, and the pruned ones say so."""
    import stackae.finetune as F
    built = []
    monkeypatch.setattr(F.Stacked, "__init__", spy(F.Stacked.__init__, built))
    prune = [lambda errors: len(errors) >= 2, lambda errors: len(errors) >= 2, None]
    runs = both_ways(datas, epochs=5, lrs=(0.1, 0.3, 0.2), dropout=0.2, prune=prune)
    assert_same_runs(*runs)
    assert [r["epochs_run"] for r in runs[3]] == [2, 2, 5]
    assert [r.get("pruned", False) for r in runs[3]] == [True, True, False]
    assert built == [1, 1, 1, 3, 1]  # three alone, then three together narrowed to one


def test_a_loop_frees_its_networks_when_it_ends_without_waiting_for_the_cycle_collector(
        datas, monkeypatch):
    """A loop that held itself (a closure over it) would keep its stacked weights, optimizer
    state and data copies alive until Python's cycle collector ran: on a GPU, memory that the
    narrower loop and the next group cannot use."""
    import gc
    import weakref
    import stackae.finetune as F
    nets, init = [], F.Stacked.__init__

    def kept(self, models):
        init(self, models)
        nets.append(weakref.ref(self))
    monkeypatch.setattr(F.Stacked, "__init__", kept)
    gc.collect()
    gc.disable()
    try:
        both_ways(datas, epochs=3, lrs=(0.1, 0.3, 0.2),
                  prune=[lambda errors: len(errors) >= 1, lambda errors: len(errors) >= 1, None])
        assert len(nets) == 5 and all(ref() is None for ref in nets)
    finally:
        gc.enable()


def test_a_loop_narrows_at_half_its_networks_and_never_when_compiled():
    from types import SimpleNamespace
    from stackae.finetune import narrower
    part = lambda running: SimpleNamespace(running=lambda: list(range(running)))  # noqa: E731
    eager, compiled = FinetuneConfig(), FinetuneConfig(compile=True)
    assert [narrower(part(r), 8, eager) for r in (8, 5, 4, 1)] == [False, False, True, True]
    assert not narrower(part(1), 8, compiled)  # a new K would compile the step again


def spy(init, built):
    def counted(self, models):
        built.append(len(models))
        init(self, models)
    return counted


def test_frozen_encoder_trains_only_the_head(datas, stack):
    alone, separate, together, batched = both_ways(datas, stack, freeze_encoder=True)
    assert_same_runs(alone, separate, together, batched)
    for m in together:
        assert torch.equal(m[0].weight, stack["layers"][0]["weight"])


def test_dropout_masks_are_each_networks_own(datas):
    """With dropout, each network draws its masks from its own seed's stream: together equals
    alone exactly as without dropout, and the masks really act (the run differs from no dropout)."""
    runs = both_ways(datas, inits=["xavier"] * 3, dropout=0.3, epochs=2)
    assert_same_runs(*runs)
    plain = both_ways(datas, inits=["xavier"] * 3, dropout=0.0, epochs=2)
    for r, p in zip(runs[3], plain[3]):
        assert r["curves"]["train_loss"] != pytest.approx(p["curves"]["train_loss"])
        loss = r["curves"]["train_loss"]
        assert all(math.isfinite(v) for v in loss) and loss[1] < loss[0]  # a valid run: it learns


@pytest.mark.parametrize("optimizer,lrs,schedule", [("sgd", (0.05, 0.2, 0.5), "constant"),
                                                    ("adam", (3e-4, 1e-3, 3e-3), "cosine")])
def test_networks_with_their_own_learning_rates_match_separate_runs(datas, stack, optimizer, lrs,
                                                                    schedule):
    """Tuning trials that differ only in the learning rate train as one K: each network's step is
    scaled to its own rate, and it ends as it would alone."""
    runs = both_ways(datas, stack, lrs=lrs, optimizer=optimizer, lr_schedule=schedule,
                     weight_decay=1e-4)
    assert_same_runs(*runs)
    assert [r["lrs"][0] for r in runs[1]] != pytest.approx([runs[1][0]["lrs"][0]] * 3)


def test_networks_with_their_own_dropout_max_norm_and_decay_match_separate_runs(datas, stack):
    """Tuning trials that differ in dropout, input dropout, max-norm and weight decay train as
    one K too; a network without dropout draws no masks, so its stream and result are those it
    has alone."""
    per = {"dropout": (0.3, 0.0, 0.5), "input_dropout": (0.0, 0.2, 0.1),
           "max_norm": (0.0, 0.3, 0.5), "lr": (0.1, 0.2, 0.05), "weight_decay": (1e-3, 0.0, 0.0)}
    runs = both_ways(datas, stack, per=per)
    assert_same_runs(*runs)
    for model, cap in zip(runs[2], per["max_norm"]):
        hidden = [m.weight for m in model if isinstance(m, torch.nn.Linear)][:-1]
        norm = torch.cat([w.norm(dim=1) for w in hidden]).max()
        assert (cap - 1e-4 < norm <= cap + 1e-5) if cap else (norm > 0.5)  # capped, or free


def test_networks_that_differ_in_more_than_seed_init_and_lr_are_refused(datas):
    cfgs = [FinetuneConfig(**SPLIT, layers=(8,), labels="100", seed=s, momentum=m)
            for s, m in ((0, 0.9), (1, 0.5))]
    models = [assemble(None, input_dim=784, n_classes=10, widths=(8,), activation="sigmoid")
              for _ in range(2)]
    with pytest.raises(ValueError, match="momentum"):
        finetune(cfgs, datas[:2], models, ["x"] * 2, [torch.arange(100)] * 2, [Silent()] * 2)


@pytest.mark.parametrize("objective,extra", [
    ("denoising", {}), ("denoising", {"corruption": "salt-pepper"}),
    ("denoising", {"corruption": "gaussian", "noise": (0.3,)}), ("plain", {}),
    ("sparse", {}), ("contractive", {}), ("rbm", {}), ("rbm", {"persistent": True, "cd_k": 2}),
])
def test_stacks_pretrained_together_match_separate_runs(datas, tmp_path, objective, extra):
    cfgs = [PretrainConfig(**SPLIT, layers=(24, 12), epochs=(2,), batch_size=64, seed=s,
                           objective=(objective,), **extra) for s in SEEDS]
    alone = [pretrain([c], [d], [folder(tmp_path / f"alone{c.seed}")], [Silent()])[0]
             for c, d in zip(cfgs, datas)]
    together = pretrain(cfgs, datas, [folder(tmp_path / f"together{c.seed}") for c in cfgs],
                        [Silent() for _ in cfgs])
    for a, t in zip(alone, together):
        s1, s2 = (torch.load(x["stack"], weights_only=True) for x in (a, t))
        for l1, l2 in zip(s1["layers"], s2["layers"]):
            assert_close(l2["weight"], l1["weight"], **TOL)
            assert_close(l2["bias"], l1["bias"], **TOL)
        for m1, m2 in zip(a["layers"], t["layers"]):
            assert_close(m2["val_recon_loss"], m1["val_recon_loss"], **TOL)
    w = [torch.load(x["stack"], weights_only=True)["layers"][0]["weight"] for x in together]
    assert not torch.equal(w[0], w[1])  # different seeds, different stacks


def test_a_stack_resumes_beside_stacks_that_start_fresh(datas, tmp_path):
    """Pretraining several stacks where one already has its first layer trains layer 1 only for the
    others, and every stack ends as it would alone."""
    cfgs = [PretrainConfig(**SPLIT, layers=(16, 8), epochs=(1,), seed=s) for s in SEEDS]
    alone = [pretrain([c], [d], [folder(tmp_path / f"a{c.seed}")], [Silent()])[0]
             for c, d in zip(cfgs, datas)]
    part = tmp_path / "t1"
    part.mkdir()
    (tmp_path / "a1" / "layer1.pt").rename(part / "layer1.pt")
    together = pretrain(cfgs, datas, [folder(tmp_path / "t0"), part, folder(tmp_path / "t2")],
                        [Silent() for _ in cfgs])
    for a, t in zip(alone[::2], together[::2]):
        s1, s2 = (torch.load(x["stack"], weights_only=True) for x in (a, t))
        assert_close(s2["layers"][1]["weight"], s1["layers"][1]["weight"], **TOL)
    s = torch.load(together[1]["stack"], weights_only=True)
    assert s["metrics"][0]["val_recon_loss"] == alone[1]["layers"][0]["val_recon_loss"]


def test_a_grid_gives_the_same_results_however_it_is_batched(tmp_path):
    tiny = dict(inits=("denoising", "random", "xavier"), seeds=SEEDS, labels=("20", "all"),
                layers=(16,), **SPLIT, pretrain_epochs=(1,), finetune_epochs=2,
                min_epoch_examples=300, dropout=0.1)
    rows = {}  # seed_batch 9: each budget's 3 arms x 3 seeds train as one loop
    for size in (1, 9):
        cfg = AblateConfig(**tiny, seed_batch=size)
        out = tmp_path / f"batch{size}"
        cells = expand(cfg)
        A.start(cfg, out, cells, G.data_sizes(cfg), CPU)
        said = []
        assert A.run_cells(cfg, out, cells, CPU, said.append) == {"ran": 18, "skipped": 0}
        ended = [line for line in said if line.startswith("[")]
        assert sum("networks together" in line for line in ended) == (0 if size == 1 else 18)
        started = [line for line in said if "fine-tuning" in line]  # said before each loop
        assert len(started) == (18 if size == 1 else 2)
        want = "fine-tuning" if size == 1 else "fine-tuning (9 networks together)"
        assert all(line.endswith(want) for line in started)
        write_report(out)
        with open(out / "results.csv") as f:
            rows[size] = sorted(csv.DictReader(f), key=lambda r: r["id"])
    assert [r["id"] for r in rows[9]] == [r["id"] for r in rows[1]]
    for r1, r0 in zip(rows[1], rows[9]):
        assert {k: v for k, v in r0.items() if k not in ("test_error", "best_val_error", "seconds")} \
            == {k: v for k, v in r1.items() if k not in ("test_error", "best_val_error", "seconds")}
        assert_close(float(r0["test_error"]), float(r1["test_error"]), **TOL)
    one, many = (tmp_path / f"batch{n}" / "runs" / "finetune" for n in (1, 9))
    for cell in cells:
        m1, m0 = (torch.load(d / cell.id / "model.pt", weights_only=True) for d in (one, many))
        assert_close(m0["state"], m1["state"], **TOL)
        files = [sorted(p.name for p in (d / cell.id).iterdir() if not p.name.startswith("events"))
                 for d in (one, many)]
        assert files[0] == files[1]
    # resume: finished cells are skipped; two killed cells are redone together, as before
    for s in (0, 2):
        (many / f"random-d1-n20-s{s}" / "result.json").unlink()
    said = []
    assert A.run_cells(cfg, tmp_path / "batch9", cells, CPU, said.append) == \
        {"ran": 2, "skipped": 16}
    assert sum("2 networks together" in line for line in said) == 3  # the start and each end
    redone = json.loads((many / "random-d1-n20-s2" / "result.json").read_text())
    first = next(r for r in rows[1] if r["id"] == "random-d1-n20-s2")
    assert_close(redone["test_error"], float(first["test_error"]), **TOL)


def test_input_dropout_and_max_norm_act_and_stay_per_network(datas):
    runs = both_ways(datas, inits=["xavier"] * 3, input_dropout=0.2, dropout=0.2, max_norm=0.5)
    assert_same_runs(*runs)
    for model in runs[2]:
        hidden = [m.weight for m in model if isinstance(m, torch.nn.Linear)][:-1]
        norms = torch.cat([w.norm(dim=1) for w in hidden])
        assert norms.max() <= 0.5 + 1e-5 and (norms > 0.5 - 1e-4).any()  # the cap binds
    free = both_ways(datas, inits=["xavier"] * 3, dropout=0.2)
    assert runs[3][0]["curves"]["train_loss"] != pytest.approx(free[3][0]["curves"]["train_loss"])


def test_unrolled_stacks_trained_together_each_end_at_their_own_best_epoch(tmp_path):
    """The unrolled autoencoder keeps each stack's epoch of lowest validation loss, not its last:
    on 30 training images the validation loss rises and falls, so the last epoch need not be the best, and K
    stacks unrolled together end as they would alone."""
    import torch.nn.functional as F
    import stackae
    split = dict(train_size=30, val_size=200, device="cpu")
    datas = [load(DataConfig(**split, seed=s), CPU) for s in SEEDS]
    cfgs = [PretrainConfig(**split, layers=(64, 16), objective=("rbm",), epochs=(1,), lr=(0.03,),
                           batch_size=10, unroll_epochs=9, seed=s) for s in SEEDS]
    alone = [pretrain([c], [d], [folder(tmp_path / f"a{c.seed}")], [Silent()])[0]
             for c, d in zip(cfgs, datas)]
    together = pretrain(cfgs, datas, [folder(tmp_path / f"t{c.seed}") for c in cfgs],
                        [Silent() for _ in cfgs])
    overfit = 0
    for a, t, d in zip(alone, together, datas):
        s1, s2 = (torch.load(x["stack"], weights_only=True) for x in (a, t))
        assert_close(s2["layers"][0]["weight"], s1["layers"][0]["weight"], **TOL)
        u = s2["unrolled"]
        losses = [h["val_recon_loss"] for h in u["history"]]
        assert u["best_epoch"] == 1 + losses.index(min(losses)) and u["val_recon_loss"] == min(losses)
        assert u["final_val_recon_loss"] == losses[-1] and a["unrolled"]["best_epoch"] == u["best_epoch"]
        overfit += u["best_epoch"] < len(losses)
        r = stackae.load_stack(t["stack"]).reconstruct(d.val_x)  # the best epoch's stack
        loss = F.binary_cross_entropy(r.double(), d.val_x.double(), reduction="sum") / len(r)
        assert float(loss) == pytest.approx(min(losses), rel=1e-4)
    assert overfit  # at least one stack's last epoch was not its best
