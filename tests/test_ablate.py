"""stackae ablate: grid expansion, pairing by seed, resume, shards, the SLURM path, bad options."""
import json
import multiprocessing

import pytest
import torch

from conftest import invoke
from stackae import ablate as A
from stackae import runner
from stackae.results import append_result
from stackae import grid as G
from stackae.config import ConfigError
from stackae.data import OptionError
from stackae.grid import AblateConfig

# a grid that runs in seconds: one small layer, 300 training images, one short epoch
TINY = dict(layers=(16,), train_size=300, val_size=200, device="cpu", pretrain_epochs=(1,),
            finetune_epochs=1, min_epoch_examples=300)
TINY_FLAGS = ["--layers", "16", "--train-size", "300", "--val-size", "200", "--device", "cpu",
              "--pretrain-epochs", "1", "--finetune-epochs", "1", "--min-epoch-examples", "300"]


def test_grid_expansion_ids_and_pretraining_reuse():
    cfg = AblateConfig(inits=("denoising", "rbm", "random", "xavier"), seeds=(0, 1, 2),
                       labels=("100", "all"), layers=(8, 4), depths=(1, 0))
    cells = G.expand(cfg)
    assert len(cells) == 4 * 3 * 2 * 2 and len({c.id for c in cells}) == len(cells)
    assert {c.depth for c in cells} == {1, 2}
    assert [c.seed for c in cells] == sorted(c.seed for c in cells)  # one data load per seed
    pre = {c.pretrain for c in cells if c.pretrain}
    assert len(pre) == 2 * 3 * 2  # once per (objective, seed, depth), shared by both budgets
    assert "denoising-d1-n100-s2" in {c.id for c in cells}
    assert G.Cell("xavier", 2, "all", 0).pretrain is None
    # a random arm gets the same shape as the pretrained one, with its own scheme
    f = cfg.finetune_config("xavier", 1, 1, "all", None)
    assert (f.init, f.init_scheme, f.layers, f.seed, f.labels) == ("random", "xavier", (8,), 1, "all")
    p = cfg.pretrain_config("rbm", 1, 1)
    assert (p.objective, p.layers, p.seed) == (("rbm",), (8,), 1)


@pytest.mark.parametrize("n_cells", [1, 7, 24, 80])
def test_shards_partition_the_grid_exactly(n_cells):
    cells = list(range(n_cells))
    for n in (1, 2, 3, 4, 7, 13):
        parts = [G.shard(cells, i, n) for i in range(1, n + 1)]
        assert sorted(x for p in parts for x in p) == cells  # union is the grid, no repeats
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert parts == [G.shard(cells, i, n) for i in range(1, n + 1)]  # deterministic


def test_parse_shard():
    assert G.parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "a/b", "1-2", "1/2/3", ""):
        with pytest.raises(ValueError):
            G.parse_shard(bad)


@pytest.mark.parametrize("args, option", [
    (["--inits", "denoising,vae"], "--inits"),
    (["--labels", "100,0"], "--labels"),
    (["--labels", "many"], "--labels"),
    (["--labels", "5"], "--labels"),            # fewer than the 10 classes
    (["--labels", "999999"], "--labels"),       # more than the training images
    (["--shard", "3/2"], "--shard"),
    (["--shard", "half"], "--shard"),
    (["--depths", "3"], "--depths"),
    (["--seeds", "1,1"], "--seeds"),
    (["--pretrain-lr", "0"], "--pretrain-lr"),
    (["--finetune-lr", "0"], "--finetune-lr"),
    (["--input-dropout", "1.5"], "--input-dropout"),
    (["--max-norm", "-1"], "--max-norm"),
    (["--inits", "sparse", "--activation", "relu"], "--sparsity-penalty"),
])
def test_bad_options_are_usage_errors_naming_the_option(args, option, tmp_path):
    r = invoke("ablate", *TINY_FLAGS, *args, "--out", tmp_path / "a")
    assert r.exit_code == 2, r.output
    assert option in r.output and "Traceback" not in r.output
    assert not (tmp_path / "a").exists()


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    r = invoke("ablate", "--preset", "full", "--dry-run", "--shard", "2/4", "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert "80 fine-tunes" in r.output and "this run: 20 cells" in r.output
    assert "784-1000-1000-500" in r.output and "example-passes" in r.output
    assert "stackae ablate --preset full --out" in r.output
    assert not (tmp_path / "a").exists()
    assert "not on this machine" not in r.output  # MNIST ships with stackae


def test_a_dry_run_says_a_dataset_it_would_download(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKAE_DATA", str(tmp_path / "cache"))
    r = invoke("ablate", "--dataset", "fashion-mnist", "--dry-run", "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    raw = tmp_path / "cache" / "FashionMNIST" / "raw"
    assert f"(not on this machine yet: the run downloads it, or put its raw files in {raw})" \
        in r.output
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"")
    assert "not on this machine" not in invoke("ablate", "--dataset", "fashion-mnist",
                                               "--dry-run", "--out", tmp_path / "a").output


def _spy(monkeypatch):
    """Record what every fine-tune starts from, and count pretraining layers trained."""
    import stackae.pretrain as P
    seen, trained = [], []
    orig_ft, orig_layer = runner.finetune, P.train_layer

    def finetune(cfgs, datas, models, inits, idxs, logs, *rest):
        for cfg, data, model, init, idx in zip(cfgs, datas, models, inits, idxs):
            lin = [m for m in model if isinstance(m, torch.nn.Linear)]
            seen.append({"seed": cfg.seed, "labels": cfg.labels, "init": init, "idx": idx.clone(),
                         "val_y": data.val_y.clone(), "head": lin[-1].weight.detach().clone(),
                         "first": lin[0].weight.detach().clone(),
                         "order": first_batch(cfg, len(idx))})
        return orig_ft(cfgs, datas, models, inits, idxs, logs, *rest)

    def train_layer(cfgs, k, *a, **kw):
        trained.extend([k] * len(cfgs))  # one entry per stack whose layer k trains
        return orig_layer(cfgs, k, *a, **kw)
    monkeypatch.setattr(runner, "finetune", finetune)
    monkeypatch.setattr(P, "train_layer", train_layer)
    return seen, trained


def first_batch(cfg, n):
    from stackae.finetune import repeats
    from stackae.train import Streams
    order = Streams([cfg.seed], "batches", torch.device("cpu")).orders(
        n, repeats(n, cfg.min_epoch_examples))
    return order[0, :cfg.batch_size]


def test_pairing_resume_and_redo(tmp_path, monkeypatch):
    cfg = AblateConfig(inits=("denoising", "random", "xavier"), seeds=(0, 1), labels=("20", "all"),
                       **TINY)
    out = tmp_path / "grid"
    cells = G.expand(cfg)
    A.start(cfg, out, cells, G.data_sizes(cfg), torch.device("cpu"))
    seen, trained = _spy(monkeypatch)
    counts = A.run_cells(cfg, out, cells, torch.device("cpu"))
    assert counts == {"ran": 12, "skipped": 0} and len(seen) == 12 and len(trained) == 2
    # paired by seed: same labels, validation split, head and batch order in every arm
    for s in (0, 1):
        for budget in ("20", "all"):
            arms = [x for x in seen if x["seed"] == s and x["labels"] == budget]
            assert len(arms) == 3
            for x in arms[1:]:
                for key in ("idx", "val_y", "head", "order"):
                    assert torch.equal(x[key], arms[0][key]), key
            firsts = [x["first"] for x in arms]  # ...and different hidden weights
            assert not torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[1], firsts[2])
    assert not torch.equal(seen[0]["idx"], [x for x in seen if x["seed"] == 1][0]["idx"])
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(l["id"] for l in lines) == sorted(c.id for c in cells)
    assert {l["labels"] for l in lines if l["budget"] == "20"} == {20}
    # rerun: everything is finished, nothing runs
    seen.clear()
    trained.clear()
    assert A.run_cells(cfg, out, cells, torch.device("cpu")) == {"ran": 0, "skipped": 12}
    assert seen == [] and trained == []
    # a cell killed mid-way (folder, no result.json) is redone; a stack killed before stack.pt
    # resumes from its finished layer checkpoints without retraining them
    killed = out / "runs" / "finetune" / "denoising-d1-n20-s1"
    (killed / "result.json").unlink()
    (killed / "half-written").write_text("x")
    (out / "runs" / "pretrain" / "denoising-d1-s1" / "stack.pt").unlink()
    assert A.run_cells(cfg, out, cells, torch.device("cpu")) == {"ran": 1, "skipped": 11}
    assert len(seen) == 1 and trained == [] and not (killed / "half-written").exists()
    assert (out / "runs" / "pretrain" / "denoising-d1-s1" / "stack.pt").exists()
    saved = json.loads((out / "runs" / "pretrain" / "denoising-d1-s1" / "config.json").read_text())
    assert saved["resumed"][-1]["layers_reloaded"] == [1]  # its first run's provenance kept,
    assert "provenance" in saved  # this one noted with what it reloaded
    for f in (out / "runs" / "pretrain" / "denoising-d1-s1").glob("*.pt"):
        f.unlink()  # its files lost (a copied folder): pretrained again from layer 1, and noted
    (killed / "result.json").unlink()
    A.run_cells(cfg, out, cells, torch.device("cpu"))
    saved = json.loads((out / "runs" / "pretrain" / "denoising-d1-s1" / "config.json").read_text())
    assert [r["layers_reloaded"] for r in saved["resumed"]] == [[1], []]


def test_missing_results_line_is_restored_on_rerun(tmp_path):
    cfg = AblateConfig(inits=("random",), seeds=(0,), labels=("20", "all"), **TINY)
    out = tmp_path / "g"
    cells = G.expand(cfg)
    A.run_cells(cfg, out, cells, torch.device("cpu"))
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(lines[0] + "\n")  # killed before the second line
    assert A.run_cells(cfg, out, cells, torch.device("cpu"))["ran"] == 0
    assert sorted(json.loads(l)["id"] for l in (out / "results.jsonl").read_text().splitlines()) \
        == sorted(c.id for c in cells)


def _appender(path, k):
    for j in range(200):
        append_result(path, {"id": f"{k}-{j}", "pad": "x" * 3000})


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "results.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(path, k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    ids = [json.loads(l)["id"] for l in path.read_text().splitlines()]
    assert len(ids) == 800 and len(set(ids)) == 800


def test_shards_through_the_cli_fill_one_folder_then_report(tmp_path):
    out = tmp_path / "g"
    arms = ["--inits", "random,xavier", "--labels", "20", *TINY_FLAGS, "-q"]
    grid = [*arms, "--seeds", "0,1"]
    r = invoke("ablate", *grid, "--shard", "1/2", "--out", out)
    assert r.exit_code == 0, r.output
    assert "2 of 4 cells finished" in r.output and not (out / "REPORT.md").exists()
    r = invoke("ablate", *grid, "--shard", "2/2", "--out", out)  # joins the existing folder
    assert r.exit_code == 0, r.output
    assert (out / "REPORT.md").exists() and "report:" in r.output
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    # the folder remembers its grid: a different grid is refused, naming the option
    r = invoke("ablate", *arms, "--seeds", "0,1,2", "--shard", "1/2", "--out", out)
    assert r.exit_code == 2 and "--seeds" in r.output and "differs" in r.output
    r = invoke("ablate", "--out", out)  # an existing folder without --resume
    assert r.exit_code == 2 and "--resume" in r.output
    r = invoke("ablate", "--out", out, "--resume", "-q")  # settings come from the folder
    assert r.exit_code == 0 and "report:" in r.output, r.output


def test_slurm_path_with_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    cfg = AblateConfig(inits=("denoising", "random"), seeds=(0, 1), labels=("20",), **TINY)
    out = tmp_path / "g"
    cells = G.expand(cfg)
    A.start(cfg, out, cells, G.data_sizes(cfg), torch.device("cpu"))
    from stackae.slurm import default_jobs, submit
    jobs = submit(out, cells, default_jobs(cells), gpus=0, cpus=1, cluster="local")
    assert len(jobs) == 2  # one chunk per seed, not one job per cell
    results = [j.result() for j in jobs]
    assert [r["ran"] for r in results] == [2, 2]
    ids = [json.loads(l)["id"] for l in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(c.id for c in cells)


def test_slurm_without_submitit_is_one_line(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "submitit" else real(name, *a))
    r = invoke("ablate", "--executor", "slurm", "--out", tmp_path / "a")
    assert r.exit_code == 2 and "pip install 'stackae[slurm]'" in r.output
    assert not (tmp_path / "a").exists()


def test_config_errors_name_ablate_fields():
    with pytest.raises(ConfigError) as e:
        AblateConfig(pretrain_epochs=(1, 2, 3))
    assert e.value.name == "pretrain_epochs"
    with pytest.raises(ConfigError) as e:
        AblateConfig(labels=("0100",))
    assert e.value.name == "labels"


def test_each_stage_has_its_own_momentum_and_weight_decay_and_old_grids_still_load(tmp_path):
    import stackae
    from stackae.config import from_dict
    g = AblateConfig(pretrain_weight_decay=2e-4, pretrain_momentum=0.5, finetune_weight_decay=1e-3)
    pre, fine = g.pretrain_config("rbm", 0, 1), g.finetune_config("xavier", 0, 1, "100", None)
    assert (pre.momentum, pre.weight_decay, fine.momentum, fine.weight_decay) == (0.5, 2e-4, 0.9, 1e-3)
    old = from_dict(AblateConfig, {"momentum": 0.8, "weight_decay": 1e-4})  # before 0.2: shared
    assert (old.pretrain_momentum, old.finetune_momentum) == (0.8, 0.8)
    assert (old.pretrain_weight_decay, old.finetune_weight_decay) == (1e-4, 1e-4)
    # a folder a grid wrote with the shared names resumes, and its report is rebuilt
    out = tmp_path / "a"
    stackae.run_ablation(out=out, train_size=600, val_size=300, layers=(8,), seeds=(0,),
                         labels=("all",), pretrain_epochs=(1,), finetune_epochs=1,
                         finetune_momentum=0.5, pretrain_momentum=0.5, device="cpu", quiet=True)
    for name in ("config.json", "grid.json"):
        saved = json.loads((out / name).read_text())
        cfg = saved["config"] if name == "grid.json" else saved
        for shared in ("momentum", "weight_decay"):
            cfg[shared] = cfg.pop(f"pretrain_{shared}")
            del cfg[f"finetune_{shared}"]
        (out / name).write_text(json.dumps(saved))
    (out / "REPORT.md").unlink()
    plan = "\n".join(stackae.plan_ablation(out=out, resume=True, momentum=0.5))
    assert "2 fine-tunes, 2 finished" in plan and "--finetune-momentum 0.5" in plan, plan
    stackae.load_ablation(out).write_report()
    assert "sgd lr 0.1 (momentum 0.5)" in (out / "REPORT.md").read_text()


def test_a_resumed_grid_may_change_how_many_networks_train_at_once(tmp_path):
    import stackae
    small = dict(train_size=600, val_size=300, layers=(8,), seeds=(0, 1), labels=("all",),
                 pretrain_epochs=(1,), finetune_epochs=1, device="cpu")
    out = tmp_path / "a"
    stackae.run_ablation(out=out, seed_batch=1, quiet=True, **small)
    (out / "runs" / "finetune" / "xavier-d1-nall-s1" / "result.json").unlink()  # unfinished
    # the same results however the networks are batched: a resume may raise or lower the cap
    grid = stackae.run_ablation(out=out, resume=True, seed_batch=0, quiet=True)
    saved = json.loads((out / "config.json").read_text())
    assert grid.finished and saved["seed_batch"] == 0
    assert saved["resumed"][-1]["changed"] == {"seed_batch": 1}  # what it was before
    with pytest.raises(ConfigError, match="differs from the run being resumed") as e:
        stackae.run_ablation(out=out, resume=True, finetune_epochs=2, quiet=True)
    assert e.value.name == "finetune_epochs"  # what a cell computes may not change


def test_a_grid_copies_the_stacks_another_made_with_its_settings_and_pretrains_the_rest(tmp_path):
    import stackae
    small = dict(train_size=600, val_size=300, layers=(8,), seeds=(0, 1), labels=("all",),
                 inits=("denoising", "xavier"), pretrain_epochs=(1,), finetune_epochs=1,
                 device="cpu")
    first = tmp_path / "first"
    stackae.run_ablation(out=first, quiet=True, **small)
    stacks = first / "runs" / "pretrain"
    (stacks / "denoising-d1-s1" / "stack.pt").unlink()  # unfinished there
    # another fine-tuning recipe on the same stacks: seed 0's is copied, seed 1's pretrained
    plan = stackae.plan_ablation(out=tmp_path / "second", stacks_from=str(first),
                                 finetune_lr=0.05, **small)
    assert f"2 runs for these cells, 0 finished, 1 to copy from {first}" in "\n".join(plan)
    own = stackae.plan_ablation(out=tmp_path / "second", finetune_lr=0.05, **small)

    def pretraining(lines):  # the work line's example-passes of pretraining
        work = next(line for line in lines if "work (whole grid)" in line)
        return int(work.split("pretraining ")[1].split(" ")[0].replace(",", ""))
    assert pretraining(plan) * 2 == pretraining(own)  # a copy is no pretraining work
    assert "the copied stacks are none of it" in "\n".join(plan)
    flags = ["--layers", "8", "--train-size", "600", "--val-size", "300", "--seeds", "0,1",
             "--labels", "all", "--pretrain-epochs", "1", "--finetune-epochs", "1", "--device",
             "cpu", "--finetune-lr", "0.05"]
    r = invoke("ablate", *flags, "--stacks-from", first, "--out", tmp_path / "second")
    assert r.exit_code == 0, r.output
    assert f"pretrain denoising-d1-s0: copied from {stacks / 'denoising-d1-s0'}" in r.output
    assert "pretrain denoising-d1-s1" in r.output.replace("copied", "")
    copied = tmp_path / "second" / "runs" / "pretrain"
    original = (stacks / "denoising-d1-s0" / "stack.pt").read_bytes()
    assert (copied / "denoising-d1-s0" / "stack.pt").read_bytes() == original
    assert (copied / "denoising-d1-s1" / "stack.pt").exists()
    report = (tmp_path / "second" / "REPORT.md").read_text()
    assert f"1 of the 2 stacks was copied from {stacks} (pretrained there with these settings" \
        in report
    own_seconds = json.loads((copied / "denoising-d1-s1" / "summary.json").read_text())["seconds"]
    assert f"**Compute:** 1 pretraining run, {own_seconds:.0f} s (the copied stack's time" \
        in report  # the copy's seconds were spent in the first folder
    # other pretraining settings copy nothing; the grid records where it looked
    r = invoke("ablate", *flags, "--pretrain-lr", "0.05", "--stacks-from", copied,
               "--out", tmp_path / "third")
    assert r.exit_code == 0 and "copied" not in r.output, r.output
    third = tmp_path / "third" / "runs" / "pretrain" / "denoising-d1-s0" / "stack.pt"
    assert third.read_bytes() != original
    assert json.loads((tmp_path / "third" / "config.json").read_text())["stacks_from"] == str(copied)
    r = invoke("ablate", *flags, "--stacks-from", tmp_path / "third" / "runs" / "finetune",
               "--out", tmp_path / "fourth")
    assert r.exit_code == 2 and "--stacks-from" in r.output and "holds no finished stacks" \
        in r.output and "Traceback" not in r.output and not (tmp_path / "fourth").exists()
    with pytest.raises(OptionError, match="is not a folder"):
        stackae.plan_ablation(out=tmp_path / "fifth", stacks_from=str(tmp_path / "none"), **small)


@pytest.mark.parametrize("cmd", ["ablate", "report"])
def test_help(cmd):
    r = invoke(cmd, "--help")
    assert r.exit_code == 0 and "Examples:" in r.output
    if cmd == "ablate":
        assert "denoising,xavier]" in r.output and "--shard" in r.output


@pytest.mark.parametrize("over", [{}, {"seeds": (4, 5), "tied": False, "noise": (0.1, 0.3)},
                                  {"layers": (1000, 1000, 500), "seeds": tuple(range(10)),
                                   "labels": ("100", "1000", "10000", "all"), "pretrain_epochs": (10,),
                                   "finetune_epochs": 30, "dropout": 0.2}])
def test_reproducing_command_rebuilds_the_grid(over, tmp_path):
    import shlex
    cfg = AblateConfig(**over)
    cmd = G.command(cfg, tmp_path / "x")
    assert ("--preset full" in cmd) == ("finetune_epochs" in over)
    r = invoke(*shlex.split(cmd)[1:], "--dry-run")
    assert r.exit_code == 0, r.output
    assert f"  command: {cmd}" in r.output.splitlines()
