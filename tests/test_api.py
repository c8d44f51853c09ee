"""The public Python API (stackae.__all__), used only as a user would, on small data."""
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import stackae
from conftest import invoke, make_idx_folder

README = Path(__file__).parent.parent / "README.md"
FAST = dict(layers=(16,), epochs=1, device="cpu", quiet=True)


def small(n_train=300, n_test=100, classes=3, seed=0):
    """Learnable synthetic images (one bright patch per class) as uint8 arrays."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (n_train, n_test):
        y = rng.integers(0, classes, n)
        x = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
        for c in range(classes):
            x[y == c, :4, 2 * c:2 * c + 3] = 250
        out += [x, y]
    return tuple(out)


def test_import_is_cheap_and_every_public_name_resolves():
    code = "import sys, stackae; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    for name in stackae.__all__:
        assert getattr(stackae, name) is not None


def test_a_diverging_pretraining_raises_diverged_and_keeps_nothing_half_done(tmp_path):
    with pytest.raises(stackae.Diverged, match="diverged: layer 1") as e:
        stackae.pretrain_stack(small(), layers=(16,), epochs=1, lr=1e30, optimizer="sgd",
                               quiet=True, out=tmp_path / "p")
    assert isinstance(e.value, stackae.RunError) and not (tmp_path / "p" / "stack.pt").exists()


def test_readme_python_api_runs_as_written(tmp_path, monkeypatch):
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    assert isinstance(namespace["encoder"], torch.nn.Sequential)
    assert namespace["codes"].shape == (5, 64)
    assert 0 <= namespace["run"].test_error < 0.5
    assert len(namespace["grid"].records) == 8 and (tmp_path / "my-stack.pt").exists()


def test_stack_from_arrays_saves_loads_and_builds_modules(tmp_path):
    data = small()
    stack = stackae.pretrain_stack(data, out=tmp_path / "p", **{**FAST, "layers": (16, 8)})
    assert stack.widths == [16, 8] and len(stack.metrics) == 2
    assert stack.metrics[0]["layer"] == 1 and stack.metrics[0]["val_recon_loss"] > 0
    assert stack.config.layers == (16, 8)
    enc = stack.encoder
    assert isinstance(enc, torch.nn.Sequential) and enc(torch.rand(4, 64)).shape == (4, 8)
    clf = stack.classifier(n_classes=7)
    assert clf(torch.rand(4, 64)).shape == (4, 7)
    assert torch.equal(clf[0].weight, enc[0].weight)  # the pretrained layer, not a fresh one
    stack.save(tmp_path / "copy.pt")
    again = stackae.load_stack(tmp_path / "copy.pt")
    assert torch.equal(again.encoder[2].weight, enc[2].weight)
    assert stackae.load_stack(tmp_path / "p").path == tmp_path / "p" / "stack.pt"
    # wrong inputs are one clear error, not a shape error deep in torch or a silent default
    assert stack.reconstruct(small()[0][:3]).shape == (3, 64)  # numpy is fine
    with pytest.raises(ValueError, match="needs inputs of 64 features"):
        stack.reconstruct(torch.rand(3, 10))
    with pytest.raises(ValueError, match="n_classes must be an integer of at least 2, got 0"):
        stack.classifier(n_classes=0)  # it gave the default 10 outputs
    from stackae.runlog import RunError
    with pytest.raises(RunError, match="not an ablation folder"):
        stackae.load_ablation(tmp_path / "p")  # its .cells raised FileNotFoundError
    with pytest.raises(RunError, match="holds no result.json"):
        stackae.Classifier(tmp_path / "p")


def test_a_data_already_split_refuses_other_sizes_and_records_its_own(tmp_path):
    d = stackae.load_data(small(), val_size=40)
    with pytest.raises(stackae.ConfigError, match="cannot apply to a Data") as e:
        stackae.pretrain_stack(d, out=tmp_path / "p", train_size=5000, **FAST)
    assert e.value.name == "train_size" and not (tmp_path / "p").exists()
    with pytest.raises(stackae.ConfigError, match=r"already drawn \(260 training, 40 validation"):
        stackae.finetune_classifier("random", d, out=tmp_path / "f", val_size=3, **FAST)
    stack = stackae.pretrain_stack(d, out=tmp_path / "p", **FAST)  # before: val_size None said
    assert stack.config.val_size == 40 == len(d.val_x)


def test_a_stack_shapes_the_network_and_other_layers_or_activation_are_refused(tmp_path):
    stack = stackae.pretrain_stack(small(), out=tmp_path / "p", **FAST)
    for name, value in (("layers", (99,)), ("activation", "relu")):
        for init, like in ((stack, None), ("random", stack)):  # both ignored them silently
            with pytest.raises(stackae.ConfigError, match="which shapes the network") as e:
                stackae.finetune_classifier(init, small(), out=tmp_path / "f", like=like,
                                            **{**FAST, name: value})
            assert e.value.name == name and not (tmp_path / "f").exists()
    run = stackae.finetune_classifier(stack, small(), out=tmp_path / "f", epochs=1, device="cpu",
                                      quiet=True)  # no --layers: the stack's
    assert run.result["test_error"] is not None
    # config.json records the stack's shape (not --layers' default), so it reruns as --config
    saved = json.loads((tmp_path / "f" / "config.json").read_text())
    assert saved["layers"] == stack.widths and saved["activation"] == "sigmoid"
    again = stackae.finetune_classifier(stack, small(), tmp_path / "f" / "config.json",
                                        out=tmp_path / "g", quiet=True)
    assert again.test_error == run.test_error


def test_a_resumed_pretraining_refuses_other_data(tmp_path):
    a, b = small(seed=0), small(seed=1)
    stackae.pretrain_stack(a, out=tmp_path / "p", **{**FAST, "layers": (16, 8)})
    for f in ("layer2.pt", "stack.pt"):  # as if stopped after layer 1
        (tmp_path / "p" / f).unlink()
    with pytest.raises(stackae.DataError, match="not those .* was started with"):
        stackae.pretrain_stack(b, out=tmp_path / "p", resume=True, **{**FAST, "layers": (16, 8)})
    assert not (tmp_path / "p" / "layer2.pt").exists()  # layer 2 was trained on b before
    stack = stackae.pretrain_stack(a, out=tmp_path / "p", resume=True, **{**FAST, "layers": (16, 8)})
    assert stack.widths == [16, 8]


def test_finetune_from_stack_and_random_and_load_model(tmp_path):
    data = small()
    stack = stackae.pretrain_stack(data, out=tmp_path / "p", **FAST)
    pre = stackae.finetune_classifier(stack, data, out=tmp_path / "f", epochs=2, labels=30,
                                      device="cpu", quiet=True)
    rand = stackae.finetune_classifier("random", data, like=stack, out=tmp_path / "r", epochs=1,
                                       device="cpu", quiet=True)
    assert pre.result["labels"] == 30 and rand.result["init"] == "random:default"
    model = stackae.load_model(tmp_path / "f" / "model.pt")
    assert isinstance(model, torch.nn.Sequential) and not model.training
    x = torch.rand(5, 64)
    assert torch.equal(model(x), pre.model(x))
    # the same folder resumed is reported, not redone
    assert stackae.finetune_classifier(stack, data, out=tmp_path / "f", resume=True,
                                       quiet=True).test_error == pre.test_error


def test_every_data_source_gives_the_same_data(tmp_path):
    xtr, ytr, xte, yte = small(n_train=120, n_test=30)
    np.savez(tmp_path / "d.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    (tmp_path / "npy").mkdir()
    for name, a in zip(("x_train", "y_train", "x_test", "y_test"), (xtr, ytr, xte, yte)):
        np.save(tmp_path / "npy" / f"{name}.npy", a)
    (tmp_path / "csv").mkdir()  # headers naming the label column, first in one file, last in the
    pixels = [f"p{i}" for i in range(64)]  # other (Excel's byte-order mark and CRLF in one)
    (tmp_path / "csv" / "train.csv").write_text(
        "\ufefflabel," + ",".join(pixels) + "\r\n" + "".join(
            ",".join(map(str, [y, *x])) + "\r\n" for x, y in zip(xtr.reshape(120, -1), ytr)),
        encoding="utf-8")
    np.savetxt(tmp_path / "csv" / "test.csv", np.column_stack([xte.reshape(30, -1), yte]),
               fmt="%d", delimiter=",", header=",".join(pixels) + ",label", comments="")
    (tmp_path / "bare").mkdir()  # no headers: the label last in both
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        np.savetxt(tmp_path / "bare" / f"{split}.csv", np.column_stack([x.reshape(len(x), -1), y]),
                   fmt="%d", delimiter=",")
    sources = [(xtr, ytr, xte, yte), (torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte),
                                      torch.tensor(yte)),
               tmp_path / "d.npz", tmp_path / "npy", str(tmp_path / "csv"), tmp_path / "bare"]
    ref = stackae.load_data(sources[0], seed=3)
    assert ref.val_x.shape == (20, 64) and ref.train_x.shape == (100, 64)  # one sixth held out
    for source in sources[1:]:
        d = stackae.load_data(source, seed=3)
        assert torch.equal(d.train_x, ref.train_x) and torch.equal(d.val_y, ref.val_y)
        assert torch.equal(d.test_x, ref.test_x) and d.n_classes == 3


def test_bad_arrays_and_files_fail_in_one_line(tmp_path):
    xtr, ytr, xte, yte = small(n_train=60, n_test=20)
    cases = [((xtr, ytr[:-1], xte, yte), "60 images but 59 labels"),
             ((xtr.astype(np.float32), ytr, xte, yte), "float pixels must be in"),
             ((xtr, ytr, xte.reshape(20, -1)[:, :10], yte), "64 features, test images 10"),
             ((xtr, ytr, xte), "must be (x_train, y_train, x_test, y_test)")]
    for data, message in cases:
        with pytest.raises(stackae.DataError, match=re.escape(message)):
            stackae.load_data(data)
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "x_train.npy", xtr)
    with pytest.raises(stackae.DataError, match="no y_train.npy"):
        stackae.load_data(tmp_path / "npy")
    with pytest.raises(stackae.DataError, match="did you mean 'mnist'"):
        stackae.load_data("mnsit")
    # a label file's fault is named by that file, not the images'
    np.save(tmp_path / "npy" / "y_train.npy", ytr)
    np.save(tmp_path / "npy" / "x_test.npy", xte)
    np.save(tmp_path / "npy" / "y_test.npy", np.eye(3)[yte])  # one-hot
    with pytest.raises(stackae.DataError, match=re.escape(
            f"{tmp_path / 'npy' / 'y_test.npy'}: labels must be a 1-D array, got shape (20, 3)")):
        stackae.load_data(tmp_path / "npy")
    (tmp_path / "npy" / "x_train.npy").rename(tmp_path / "npy" / "X_train.npy")
    with pytest.raises(stackae.DataError, match="but no x_train.npy"):
        stackae.load_data(tmp_path / "npy")
    # a header in one CSV and not the other: the label column cannot be told; refused
    (tmp_path / "csv").mkdir()
    header = "label," + ",".join(f"p{i}" for i in range(64))
    for split, x, y, head in (("train", xtr, ytr, header), ("test", xte, yte, "")):
        np.savetxt(tmp_path / "csv" / f"{split}.csv", np.column_stack([y, x.reshape(len(x), -1)]),
                   fmt="%d", delimiter=",", header=head, comments="")
    with pytest.raises(stackae.DataError, match="test.csv has no header row but .*train.csv has one"):
        stackae.load_data(tmp_path / "csv")


def test_small_data_set_runs_with_default_flags(tmp_path):
    """About 1,500 images: no --val-size needed (250 are held out), the report says so."""
    folder = make_idx_folder(tmp_path / "d", n_train=1500, n_test=300, gz=True)
    r = invoke("pretrain", "--data", folder, "--layers", "16", "--epochs", "1", "--device", "cpu",
               "--quiet", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    r = invoke("finetune", "--data", folder, "--init", tmp_path / "p" / "stack.pt", "--epochs",
               "2", "--device", "cpu", "--quiet", "--out", tmp_path / "f")
    assert r.exit_code == 0 and "1250 labels" in r.output, r.output


def test_ablation_fits_default_budgets_to_small_data(tmp_path, capsys):
    data = small(n_train=600, n_test=60)
    grid = stackae.run_ablation(data, out=tmp_path / "a", layers=(8,), seeds=(0,),
                                pretrain_epochs=1, finetune_epochs=1, min_epoch_examples=0,
                                device="cpu")
    assert "label budgets 1000, 10000 dropped: the data have 500 training images" in \
        capsys.readouterr().err
    assert grid.config.labels == ("100", "all") and grid.finished
    assert {r["budget"] for r in grid.records} == {"100", "all"}
    assert "500 training images (after a seeded 100-image validation split" in \
        (tmp_path / "a" / "REPORT.md").read_text()
    assert stackae.load_ablation(tmp_path / "a").report["conditions"]
    pd = pytest.importorskip("pandas")
    frame = grid.dataframe()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 4
    for labels, message in ((("1000",), "1000 exceeds the 500 training images"),
                            (("2", "all"), "2 is smaller than the 3 classes")):
        with pytest.raises(stackae.DataError, match=message):
            stackae.run_ablation(data, out=tmp_path / "b", labels=labels, device="cpu")
        assert not (tmp_path / "b").exists()  # nothing written
    # resumed, the grid keeps the arrays it started with: the same ones again, or a clear refusal
    again = stackae.run_ablation(data, out=tmp_path / "a", resume=True, quiet=True)
    assert again.finished and again.records == grid.records
    with pytest.raises(stackae.DataError, match="not those .* was started with"):
        stackae.run_ablation(small(n_train=600, n_test=60, seed=1), out=tmp_path / "a",
                             resume=True)


def test_unknown_settings_and_values_name_the_nearest(tmp_path):
    with pytest.raises(stackae.ConfigError, match="unknown setting 'epoch'; did you mean 'epochs'"):
        stackae.pretrain_stack(small(), epoch=3)
    with pytest.raises(stackae.ConfigError) as e:  # the text names the setting, as the CLI does
        stackae.finetune_classifier("random", small(), lr=-1, out=tmp_path / "f")
    assert str(e.value) == "lr: must be positive, got -1.0" and e.value.name == "lr"
    assert not (tmp_path / "f").exists()
    r = invoke("finetune", "--lr", "-1", "--out", tmp_path / "f")
    assert r.exit_code == 2 and "'--lr': must be positive, got -1.0" in r.output
    assert "lr: must" not in r.output
    cfg = tmp_path / "c.json"
    cfg.write_text('{"lerning_rate": 0.1}')
    r = invoke("finetune", "--config", cfg)
    assert r.exit_code == 2 and "unknown setting 'lerning_rate'" in r.output
    assert "known:" not in r.output  # one short line, not every setting
    r = invoke("pretrain", "--dataset", "fashion-mnst")
    assert r.exit_code == 2 and "did you mean 'fashion-mnist'?" in r.output
    r = invoke("ablate", "--inits", "denoising,randon")
    assert r.exit_code == 2 and "did you mean 'random'?" in r.output


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_numpy_values_are_settings_and_a_bad_shard_is_one_error(tmp_path):
    import stackae.grid as G
    plan = stackae.plan_ablation(layers=(np.int64(8),), seeds=np.arange(2), labels=(np.int64(100),),
                                 finetune_lr=np.float32(0.5), out=tmp_path / "a")
    assert "  seeds:   0, 1" in plan and "  depths:  784-8" in plan
    for bad in ((3, 2), (1, 0), (0, 2), (-1, 2), 5):  # (0, 2) ran shard 2/2, (3, 2) an IndexError
        with pytest.raises(stackae.ConfigError, match="expected .* with 1 <= i <= n") as e:
            stackae.plan_ablation(shard=bad, out=tmp_path / "a")
        assert e.value.name == "shard"
    cells = G.expand(stackae.AblateConfig())
    mine = "\n".join(stackae.plan_ablation(shard="2/2", out=tmp_path / "a"))
    assert f"this run: {len(G.shard(cells, 2, 2))} cells" in mine


def test_progress_is_a_bar_on_a_terminal_plain_lines_elsewhere_nothing_when_quiet():
    from stackae.progress import Progress
    term, pipe, quiet = Terminal(), io.StringIO(), Terminal()
    for stream, q in ((term, False), (pipe, False), (quiet, True)):
        with Progress(3, "epoch", q, stream=stream) as p:
            for e in (1, 2, 3):
                p.line(f"epoch {e}/3  loss 0.5")
    assert pipe.getvalue() == "".join(f"epoch {e}/3  loss 0.5\n" for e in (1, 2, 3))
    assert "3/3" in term.getvalue() and "epoch 3/3  loss 0.5" in term.getvalue()
    assert quiet.getvalue() == ""
    resumed = Terminal()  # a resumed run's bar starts where it stood
    with Progress(5, "epoch", False, stream=resumed) as p:
        p.line("resuming after epoch 3 of 5 (resume.pt)")
        assert p.bar.n == 3
        for e in (4, 5):
            p.line(f"epoch {e}/5  loss 0.5")
        assert p.bar.n == 5


def test_a_stack_reconstructs_its_inputs_as_the_unrolled_autoencoder_scored_them(tmp_path):
    """Stack.reconstruct runs the encoders up and the decoders down: its cross-entropy on the
    validation images is the unrolled autoencoder's own validation loss."""
    import torch.nn.functional as F
    split = dict(train_size=400, val_size=200, seed=3)
    stack = stackae.pretrain_stack("mnist", out=tmp_path / "p", layers=(16, 8, 4),
                                   objective=("rbm", "denoising", "plain"), epochs=1,
                                   unroll_epochs=1, device="cpu", quiet=True, **split)
    data = stackae.load_data("mnist", **split)
    r = stack.reconstruct(data.val_x)
    assert r.shape == data.val_x.shape and 0 <= float(r.min()) and float(r.max()) <= 1
    loss = F.binary_cross_entropy(r.double(), data.val_x.double(), reduction="sum") / len(r)
    assert float(loss) == pytest.approx(stack.summary["unrolled"]["val_recon_loss"], rel=1e-4)
