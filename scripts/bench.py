"""Benchmark: stackae's training throughput against the machine's matmul ceiling and a textbook
PyTorch implementation, in one process on one machine.

    python scripts/bench.py                 # full: 60,000 MNIST images, 784-1000-1000-500 (~15 min on 2 cores)
    python scripts/bench.py --quick         # reduced sizes, under a minute; a smoke check
    python scripts/bench.py --json bench.json --precision bfloat16
    python scripts/bench.py --device cuda --ks 1,10,20,80 --grid   # the GPU section
    python scripts/bench.py --steps 20,128 --ks 1,8 --steps-only    # eager against --compile

Fine-tuning is also measured against K, the number of networks one loop trains (--ks); with
--steps, the time of one fine-tuning step, eager against compiled (--compile; on CUDA replayed as
CUDA graphs), at those batch sizes for each K; and with --grid the whole `stackae ablate --preset
full` grid is timed as a separate process, beside its physical limit (the grid's FLOPs over the
measured matmul ceiling).

Prints a table and writes JSON. FLOPs are counted from the GEMMs a step performs (forward and
backward); elementwise work is not counted, so the fraction of the ceiling is a lower bound on how
busy the matmul units are.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stackae import data as data_mod  # noqa: E402
from stackae.config import PRECISIONS, FinetuneConfig, PretrainConfig  # noqa: E402
from stackae.finetune import finetune  # noqa: E402
from stackae.network import assemble  # noqa: E402
from stackae.pretrain import build_layer, encode_all, train_layer  # noqa: E402
from stackae.train import matmul_precision, resolve_device  # noqa: E402


class NullLog:
    quiet = True

    def scalars(self, *a, **k): pass
    def progress(self, *a, **k): pass


class TextbookAE(torch.nn.Module):
    """The usual one-layer tied autoencoder of tutorials: nn.Linear encoder, transposed decoder."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.encoder = torch.nn.Linear(n_in, n_out)
        self.decoder_bias = torch.nn.Parameter(torch.zeros(n_in))

    def encode(self, x):
        return torch.sigmoid(self.encoder(x))

    def loss(self, xin, target):
        raw = F.linear(self.encode(xin), self.encoder.weight.t(), self.decoder_bias)
        return F.binary_cross_entropy_with_logits(raw, target, reduction="sum") / len(target)


@torch.no_grad()
def test_error(model, x, y):
    model.eval()
    return sum(int((model(xb).argmax(1) != yb).sum()) for xb, yb in zip(x.split(4096), y.split(4096))
               ) / len(x)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_ceiling(shapes, dtype, device, seconds=1.0) -> float:
    """GFLOP/s of the workload's GEMMs, run back to back (forward and both backward GEMMs)."""
    mats = []
    for m, k, n in shapes:
        mats.append((torch.randn(m, k, dtype=dtype, device=device),
                     torch.randn(k, n, dtype=dtype, device=device)))
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in mats)
    for a, b in mats:
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for a, b in mats:
            a @ b
        reps += 1
    sync(device)
    return flops * reps / (time.perf_counter() - t0) / 1e9


def ae_step_shapes(b, n_in, n_out):
    """The six GEMMs of one autoencoder step: encoder/decoder forward, and two backward each."""
    return [(b, n_in, n_out), (b, n_out, n_in),            # forward
            (b, n_in, n_out), (n_in, b, n_out),            # decoder backward: dH, dW
            (b, n_out, n_in), (n_out, b, n_in)]            # encoder backward: dX (unused), dW


def textbook_step(layer, frozen, opt, xb):
    """One step of the usual loop: frozen layers recomputed, masking noise, .item() at the end."""
    with torch.no_grad():
        for f in frozen:
            xb = f.encode(xb)
    xc = xb * (torch.rand_like(xb) >= 0.25)
    loss = layer.loss(xc, xb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    loss.item()


def textbook_layer(x_all, frozen, n_in, n_out, batch, max_batches, device):
    """The usual loop: DataLoader, frozen layers recomputed each step, float32, .item() per batch."""
    layer = TextbookAE(n_in, n_out).to(device)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x_all), batch_size=batch, shuffle=True)
    seen, t0 = 0, time.perf_counter()
    for i, (xb,) in enumerate(loader):
        if i == max_batches:
            break
        textbook_step(layer, frozen, opt, xb.to(device))
        seen += len(xb)
    sync(device)
    return seen / (time.perf_counter() - t0)


def textbook_finetune(model, x, y, batch, max_batches, device):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)
    seen, t0 = 0, time.perf_counter()
    model.train()
    for i, (xb, yb) in enumerate(loader):
        if i == max_batches:
            break
        loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        seen += len(xb)
    sync(device)
    return seen / (time.perf_counter() - t0)


class TargetReached(Exception):
    pass


class TargetLog(NullLog):
    """Stops stackae's own fine-tuning loop at the first epoch at or below the target. The loop
    reads its test set only once, at the end, so time_to_target hands it the test set as its
    validation set: this benchmark's stopping rule reads the test error every epoch, on both
    sides alike (a benchmark of speed, not a selection protocol)."""

    def __init__(self, target):
        self.target = target

    def scalars(self, epoch, values, **k):
        if values.get("finetune/val_error", 1.0) <= self.target:
            raise TargetReached(epoch, values["finetune/val_error"])


def time_to_target(x, y, data, widths, target, pretrain_epochs, max_epochs, textbook, device, B,
                   Bf, precision):
    """Wall time from nothing to a fine-tuned network with test error <= target: pretraining
    (pretrain_epochs per layer), then fine-tuning epochs until the target is met. stackae's side
    runs stackae's own train_layer/encode_all/finetune; the textbook side the usual loops."""
    torch.manual_seed(0)
    t0 = time.perf_counter()
    layers, codes, n_in = [], x, x.shape[1]
    cfg = PretrainConfig(layers=widths, epochs=(pretrain_epochs,), batch_size=B, device=str(device),
                         precision=precision)
    stack = {"layers": []}
    for k, w in enumerate(widths):
        if textbook:
            layer = TextbookAE(n_in, w).to(device)
            opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
            for _ in range(pretrain_epochs):
                for (xb,) in DataLoader(TensorDataset(x), batch_size=B, shuffle=True):
                    textbook_step(layer, layers, opt, xb)
            layers.append(layer.requires_grad_(False).eval())
            stack["layers"].append({"width": w, "activation": "sigmoid",
                                    "weight": layer.encoder.weight.cpu(),
                                    "bias": layer.encoder.bias.cpu()})
        else:
            layer = build_layer([cfg], k, n_in, True, device)
            train_layer([cfg], k, layer, codes[None], codes[None, :1000], [NullLog()])
            codes = encode_all(layer.requires_grad_(False).eval(), codes[None], precision)[0]
            stack["layers"].append({"width": w, "activation": "sigmoid", **layer.export(0)})
        n_in = w
    model = assemble(stack, input_dim=x.shape[1], n_classes=10).to(device)
    if not textbook:
        from stackae.data import Data
        dd = Data(x, y, data.test_x, data.test_y, data.test_x, data.test_y, 10, "mnist", (28, 28))
        fcfg = FinetuneConfig(epochs=max_epochs, batch_size=Bf, precision=precision,
                              min_epoch_examples=0, device=str(device))
        try:
            res = finetune([fcfg], [dd], [model], ["stack"], [torch.arange(len(x), device=device)],
                           [TargetLog(target)])[0]
        except TargetReached as hit:
            epoch, err = hit.args
            return {"seconds": time.perf_counter() - t0, "epochs": epoch, "test_error": err}
        return {"seconds": None, "epochs": max_epochs, "test_error": min(res["curves"]["val_error"]),
                "missed": True}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(1, max_epochs + 1):
        model.train()
        for xb, yb in DataLoader(TensorDataset(x, y), batch_size=Bf, shuffle=True):
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        err = test_error(model, data.test_x, data.test_y)
        if err <= target:
            return {"seconds": time.perf_counter() - t0, "epochs": epoch, "test_error": err}
    return {"seconds": None, "epochs": max_epochs, "test_error": err, "missed": True}


def finetune_k(K: int, d, idx, widths, logs=None, prune=None, **settings) -> None:
    """K random-init sigmoid networks (seeds 0..K-1) fine-tuned at once on d's examples idx."""
    cfgs = [FinetuneConfig(min_epoch_examples=0, device=d.train_x.device.type, seed=s, **settings)
            for s in range(K)]
    models = [assemble(None, input_dim=d.train_x.shape[1], n_classes=10, widths=widths,
                       activation="sigmoid", seed=s) for s in range(K)]
    finetune(cfgs, [d] * K, models, ["random"] * K, [idx] * K, logs or [NullLog()] * K,
             prune=prune)


def stopped_networks(K: int, epochs: int, dd, widths, Bf, precision, device) -> dict:
    """Seconds of K networks fine-tuned for `epochs` epochs on dd's training set, against the
    same with three quarters of them pruned after the first epoch: finetune then trains the rest
    as a narrower loop, so the run should cost about `work` of the full one (one epoch of K, the
    others of K / 4)."""
    idx = torch.arange(len(dd.train_x), device=device)
    keep = max(1, K // 4)
    out = {"k": K, "epochs": epochs, "kept": keep,
           "work": (1 + (epochs - 1) * keep / K) / epochs}
    for name, prune in (("seconds_all", None),
                        ("seconds_pruned", [lambda errors: True] * (K - keep) + [None] * keep)):
        sync(device)
        t0 = time.perf_counter()
        finetune_k(K, dd, idx, widths, prune=prune, epochs=epochs, batch_size=Bf,
                   precision=precision)
        sync(device)
        out[name] = time.perf_counter() - t0
    return out


def finetune_against_k(ks, dd, widths, Bf, precision, device, ft_flops_per_example, ceiling):
    """Samples/s of one fine-tuning epoch of K networks at once (K seeds of one arm) on dd's
    training set, per K."""
    idx = torch.arange(len(dd.train_x), device=device)
    rows = []
    for K in ks:
        sync(device)
        t0 = time.perf_counter()
        finetune_k(K, dd, idx, widths, epochs=1, batch_size=Bf, precision=precision)
        sync(device)
        dt = time.perf_counter() - t0
        rate = K * len(dd.train_x) / dt
        rows.append({"k": K, "seconds": dt, "samples_per_s": rate,
                     "gflops": rate * ft_flops_per_example / 1e9,
                     "fraction_of_ceiling": rate * ft_flops_per_example / 1e9 / ceiling})
    return rows


class EpochTimes(NullLog):
    def __init__(self):
        self.seconds = []

    def scalars(self, step, values, **k):
        if "finetune/epoch_seconds" in values:
            self.seconds.append(values["finetune/epoch_seconds"])


def step_times(batches, ks, widths, precision, device, steps: int = 150) -> list[dict]:
    """Milliseconds per fine-tuning step of K networks (784-widths-10, sigmoid, SGD), eager
    against compiled: the second of two epochs of `steps` full batches each (the first pays the
    compilation), evaluation on 100 images. Random data: the time does not depend on it."""
    from stackae.data import Data
    rows = []
    for B in batches:
        n = B * steps
        x, y = torch.rand(n, 784, device=device), torch.randint(0, 10, (n,), device=device)
        d = Data(x, y, x[:100], y[:100], x[:100], y[:100], 10, "mnist", (28, 28))
        idx = torch.arange(n, device=device)
        for K in ks:
            ms = {}
            for mode in ("eager", "compiled"):
                logs = [EpochTimes() for _ in range(K)]
                finetune_k(K, d, idx, widths, logs, epochs=2, batch_size=B, precision=precision,
                           compile=mode == "compiled")
                ms[mode] = logs[0].seconds[-1] / steps * 1e3
            rows.append({"batch": B, "k": K, "eager_ms": ms["eager"],
                         "compiled_ms": ms["compiled"], "speedup": ms["eager"] / ms["compiled"],
                         "compiled_samples_per_s": K * B / ms["compiled"] * 1e3})
    return rows


def print_steps(rows) -> None:
    for r in rows:
        print(f"fine-tuning step, batch {r['batch']:<4} K={r['k']:<3} eager {r['eager_ms']:7.2f} ms"
              f"  compiled {r['compiled_ms']:7.2f} ms  ({r['speedup']:.2f}x; "
              f"{r['compiled_samples_per_s']:,.0f} samples/s)")


def whole_grid(device, ceiling_gflops, extra=()) -> dict:
    """`stackae ablate --preset full` from nothing, as a separate process, and its physical limit:
    the grid's FLOPs (from its --dry-run estimate) over the measured matmul ceiling."""
    import re
    import subprocess
    import tempfile
    out = Path(tempfile.mkdtemp()) / "grid"
    cmd = [sys.executable, "-m", "stackae", "ablate", "--preset", "full", "--device", device.type,
           "--quiet", *extra, "--out", str(out)]
    dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, check=True).stdout
    tflop = sum(float(v) for v in re.findall(r"~([0-9.e+-]+) TFLOP", dry))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return {"command": " ".join(cmd[1:]), "seconds": time.perf_counter() - t0, "tflop": tflop,
            "limit_seconds": tflop * 1e3 / ceiling_gflops}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes, under a minute")
    ap.add_argument("--precision", choices=PRECISIONS, default="float32",
                    help="tf32 (CUDA only) lets float32 matmuls use TF32 tensor cores")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="minibatch size of every part (default: stackae's own defaults, "
                         f"{PretrainConfig.batch_size} for pretraining and "
                         f"{FinetuneConfig.batch_size} for fine-tuning)")
    ap.add_argument("--json", type=Path, default=Path("bench.json"))
    ap.add_argument("--ks", default=None, help="fine-tuning samples/s against K networks at once "
                    "(default 1,4 with --quick, else 1,8)")
    ap.add_argument("--steps", default=None, help="also time one fine-tuning step, eager against "
                    "compiled (--compile), at these batch sizes (e.g. 20,128) for each K of --ks")
    ap.add_argument("--steps-only", action="store_true", help="measure only --steps")
    ap.add_argument("--stops", action="store_true", help="also time K networks (the largest of "
                    "--ks) fine-tuned 4 epochs, all of them against three quarters pruned after "
                    "the first: what stopped networks still cost")
    ap.add_argument("--grid", action="store_true", help="also time `stackae ablate --preset full` "
                    "end to end (minutes on a GPU, hours on a CPU)")
    ap.add_argument("--target", type=float, default=None,
                    help="also measure wall time to this test error (e.g. 0.02), for stackae and "
                         "the textbook loop (pretraining 2 epochs per layer, then fine-tuning)")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if args.precision == "tf32" and device.type != "cuda":
        ap.error("--precision tf32 needs a CUDA device")
    with matmul_precision(args.precision):  # the ceiling's matmuls too
        return measure(args, device)


def measure(args, device) -> dict:
    widths = (256, 256, 128) if args.quick else (1000, 1000, 500)
    ks = [int(k) for k in (args.ks or ("1,4" if args.quick else "1,8")).split(",")]
    steps = [int(b) for b in args.steps.split(",")] if args.steps else []
    if args.steps_only:
        out = {"device": str(device), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "precision": args.precision,
               "widths": list(widths),
               "steps": step_times(steps or [20, 128], ks, widths, args.precision, device,
                                   30 if args.quick else 150)}
        print(f"stackae bench --steps-only  device={out['device']} threads={out['threads']} "
              f"precision={args.precision} 784-{'-'.join(map(str, widths))}-10")
        print_steps(out["steps"])
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
        return out
    n = 6000 if args.quick else 60000
    B = args.batch_size or PretrainConfig.batch_size
    Bf = args.batch_size or FinetuneConfig.batch_size
    cfg = PretrainConfig(layers=widths, epochs=(1,), val_size=1000, batch_size=B,
                         precision=args.precision, device=str(device))
    d = data_mod.load(PretrainConfig(val_size=1), device)
    x = torch.cat([d.train_x, d.val_x])[:n]  # all 60,000 training images
    y = torch.cat([d.train_y, d.val_y])[:n]
    x_val = d.test_x[:1000]
    dtype = torch.bfloat16 if args.precision == "bfloat16" else torch.float32
    out = {"machine": platform.processor() or platform.machine(), "device": str(device),
                     "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "precision": args.precision, "batch_size": B, "finetune_batch_size": Bf,
                     "examples": n,
                     "widths": list(widths), "layers": []}

    # torch's first optimizer imports torch._dynamo (about a second): a process cost, not throughput
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])

    # --- stackae pretraining, layer by layer, with the ceiling at the same shapes ---
    codes, codes_val, n_in = x, x_val, x.shape[1]
    total_flops = total_time = 0.0
    frozen = []
    for k, w in enumerate(widths):
        layer = build_layer([cfg], k, n_in, True, device)
        t0 = time.perf_counter()
        train_layer([cfg], k, layer, codes[None], codes_val[None], [NullLog()])
        sync(device)
        dt = time.perf_counter() - t0
        flops = 12 * n_in * w * n  # 6 GEMMs of 2*n_in*w FLOPs per example
        ceiling = matmul_ceiling(ae_step_shapes(B, n_in, w), dtype, device)
        tb_batches = 30 if args.quick else 120
        tb = textbook_layer(x, frozen, n_in, w, B, tb_batches, device)
        rec = {"layer": k + 1, "shape": f"{n_in}x{w}", "seconds": dt, "samples_per_s": n / dt,
               "gflops": flops / dt / 1e9, "ceiling_gflops": ceiling,
               "fraction_of_ceiling": flops / dt / 1e9 / ceiling, "textbook_samples_per_s": tb,
               "speedup": n / dt / tb}
        out["layers"].append(rec)
        total_flops += flops
        total_time += dt
        layer.requires_grad_(False).eval()
        t0 = time.perf_counter()
        if k + 1 < len(widths):  # as stackae does: the top layer's codes feed nothing
            codes = encode_all(layer, codes[None], args.precision)[0]
            codes_val = encode_all(layer, codes_val[None], args.precision)[0]
        sync(device)
        total_time += time.perf_counter() - t0  # caching the codes is part of the stack's cost
        frozen.append(layer)
        n_in = w
    stack_ceiling = sum(r["ceiling_gflops"] * 12 * int(r["shape"].split("x")[0]) *
                        int(r["shape"].split("x")[1]) for r in out["layers"]) / sum(
        12 * int(r["shape"].split("x")[0]) * int(r["shape"].split("x")[1]) for r in out["layers"])
    tb_stack = n * len(widths) / sum(n / r["textbook_samples_per_s"] for r in out["layers"])
    out["stack"] = {"seconds": total_time, "gflops": total_flops / total_time / 1e9,
                    "ceiling_gflops": stack_ceiling,
                    "fraction_of_ceiling": total_flops / total_time / 1e9 / stack_ceiling,
                    "samples_per_s": n * len(widths) / total_time,
                    "textbook_samples_per_s": tb_stack,
                    "speedup": n * len(widths) / total_time / tb_stack}

    # --- fine-tuning: one epoch over all labels ---
    fcfg = FinetuneConfig(epochs=1, batch_size=Bf, precision=args.precision, min_epoch_examples=0,
                          device=str(device))
    dims = [x.shape[1], *widths, 10]
    pairs = list(zip(dims[:-1], dims[1:]))
    ft_flops = n * (6 * sum(a * b for a, b in pairs) - 2 * dims[0] * dims[1])  # no dX for layer 1
    model = assemble(None, input_dim=dims[0], n_classes=10, widths=widths, activation="sigmoid")
    from stackae.data import Data
    dd = Data(x, y, d.test_x[:1000], d.test_y[:1000], d.test_x[:1000], d.test_y[:1000], 10, "mnist",
              (28, 28))
    t0 = time.perf_counter()
    res = finetune([fcfg], [dd], [model], ["random"], [torch.arange(n, device=device)],
                   [NullLog()])[0]
    sync(device)
    ft_time = res["seconds"]
    ft_shapes = []
    for a, b in pairs:
        ft_shapes += [(Bf, a, b), (Bf, b, a), (a, Bf, b)]
    ft_ceiling = matmul_ceiling(ft_shapes, dtype, device)
    model = assemble(None, input_dim=dims[0], n_classes=10, widths=widths, activation="sigmoid").to(device)
    tb_ft = textbook_finetune(model, x, y, Bf, 30 if args.quick else 150, device)
    out["finetune"] = {"seconds_per_epoch": ft_time, "samples_per_s": n / ft_time,
                       "gflops": ft_flops / ft_time / 1e9, "ceiling_gflops": ft_ceiling,
                       "fraction_of_ceiling": ft_flops / ft_time / 1e9 / ft_ceiling,
                       "textbook_samples_per_s": tb_ft, "speedup": n / ft_time / tb_ft,
                       "note": "epoch time includes validation and test evaluation"}
    out["finetune_k"] = finetune_against_k(ks, dd, widths, Bf, args.precision, device,
                                           ft_flops / n, ft_ceiling)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.target:
        xt, yt = torch.cat([d.train_x, d.val_x]), torch.cat([d.train_y, d.val_y])
        epochs = 1 if args.quick else 2
        out["time_to_target"] = {"target": args.target, "pretrain_epochs": epochs, **{
            name: time_to_target(xt[:n], yt[:n], d, widths, args.target, epochs,
                                 3 if args.quick else 30, name == "textbook", device, B, Bf,
                                 args.precision)
            for name in ("stackae", "textbook")}}
    if steps:
        out["steps"] = step_times(steps, ks, widths, args.precision, device,
                                  30 if args.quick else 150)
    if args.stops:
        out["stops"] = stopped_networks(max(ks), 4, dd, widths, Bf, args.precision, device)
    if args.grid:
        out["grid"] = whole_grid(device, ft_ceiling, ("--precision", args.precision))
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20

    print(f"stackae bench  device={out['device']} threads={out['threads']} precision="
          f"{args.precision} batch={B} (fine-tuning {Bf}) examples={n}")
    print(f"{'part':<14}{'samples/s':>11}{'GFLOP/s':>9}{'ceiling':>9}{'of ceil':>9}"
          f"{'textbook/s':>12}{'speedup':>9}")
    for r in out["layers"] + [dict(out["stack"], layer="stack"), dict(out["finetune"], layer="finetune")]:
        name = r["layer"] if isinstance(r["layer"], str) else f"layer {r['layer']} {r['shape']}"
        print(f"{name:<14}{r['samples_per_s']:>11.0f}{r['gflops']:>9.1f}{r['ceiling_gflops']:>9.1f}"
              f"{r['fraction_of_ceiling']:>9.0%}{r['textbook_samples_per_s']:>12.0f}"
              f"{r['speedup']:>8.1f}x")
    for r in out["finetune_k"]:
        print(f"fine-tuning K={r['k']:<3} networks at once: {r['samples_per_s']:>10.0f} samples/s "
              f"{r['gflops']:>8.1f} GFLOP/s  {r['fraction_of_ceiling']:>5.0%} of ceiling")
    if steps:
        print_steps(out["steps"])
    if args.stops:
        r = out["stops"]
        print(f"K={r['k']} networks, {r['epochs']} epochs: {r['seconds_all']:.1f}s; with "
              f"{r['k'] - r['kept']} pruned after the first, {r['seconds_pruned']:.1f}s "
              f"({r['seconds_pruned'] / r['seconds_all']:.0%}; the work left is {r['work']:.0%})")
    if args.grid:
        g = out["grid"]
        print(f"whole grid ({g['command']}): {g['seconds']:.0f}s; physical limit "
              f"{g['limit_seconds']:.1f}s ({g['tflop']:.2g} TFLOP at the measured ceiling)")
    print(f"peak memory {out['peak_rss_mb']:.0f} MB (process RSS, before the time-to-target runs)")
    if args.target:
        for name in ("stackae", "textbook"):
            r = out["time_to_target"][name]
            print(f"time to {args.target:.1%} test error, {name}: " + (
                f"{r['seconds']:.0f}s ({r['epochs']} fine-tuning epochs)" if r["seconds"] else
                f"not reached in {r['epochs']} epochs (best {r['test_error']:.2%})"))
    args.json.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
