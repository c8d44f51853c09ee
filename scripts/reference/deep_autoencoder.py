"""The deep autoencoder of Hinton & Salakhutdinov (2006) beside PCA, on MNIST.

    python scripts/reference/deep_autoencoder.py                    # -> runs/reference/deep-autoencoder
    python scripts/reference/deep_autoencoder.py --rbm-epochs 2 --unroll-epochs 2 --out /tmp/dae

A 784-1000-500-250-30 stack of RBMs, pretrained greedily and unrolled into a deep autoencoder that
is fine-tuned on reconstruction (stackae pretrain --objective rbm --unroll-epochs N), against PCA
with 30 components computed here on the same training images; both are scored by the squared
reconstruction error per test image (summed over the 784 pixels, averaged over the 10,000 test
images), as the paper reports it (3.00 for the autoencoder, 13.87 for PCA). The same with a
2-unit code gives the 2-D test codes beside PCA's first two components as a scatter figure.
Resumable: rerun the same command and finished stacks are reused.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import stackae

PUBLISHED = {"autoencoder": 3.00, "pca": 13.87, "logistic_pca": 8.01}


def squared_error(x: torch.Tensor, r: torch.Tensor) -> float:
    """Mean over images of the squared error summed over pixels."""
    return float(((x - r) ** 2).sum(1).mean())


def pca(train: torch.Tensor, k: int):
    """The mean and the top-k principal directions (k x features) of the training images."""
    mean = train.mean(0)
    _, _, v = torch.linalg.svd(train - mean, full_matrices=False)
    return mean, v[:k]


def logistic_pca(x: torch.Tensor, k: int, steps: int, seed: int, components=None):
    """Logistic PCA (Schein et al. 2003): x ~ sigmoid(codes @ V.T + b), V (features x k), fit on
    the pixels' cross-entropy by full-batch Adam; each image's code is its own parameter. With
    `components` (V, b) given, only the codes of `x` are fit (how test images are encoded).
    Returns the codes, V, b and the last cross-entropy per image."""
    g = torch.Generator().manual_seed(seed)
    codes = (0.01 * torch.randn(len(x), k, generator=g)).requires_grad_()
    if components is None:
        v = (0.01 * torch.randn(x.shape[1], k, generator=g)).requires_grad_()
        b = torch.logit(x.mean(0).clamp(1e-3, 1 - 1e-3)).requires_grad_()
        fit = [codes, v, b]
    else:
        (v, b), fit = components, [codes]
    opt = torch.optim.Adam(fit, lr=0.05)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            torch.addmm(b, codes, v.T), x, reduction="sum") / len(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return codes.detach(), v.detach(), b.detach(), loss.item()


def autoencoder(code: int, seed: int, args, stacks: dict) -> stackae.Stack:
    """The stack with this code size and seed, trained here or loaded; stacks[code, seed] keeps it
    and the seconds this call took (time the stack's own record counts instead)."""
    folder, t0 = args.out / stack_folder(code, seed), time.perf_counter()
    # a finished stack is loaded, an interrupted one resumed, if trained as asked now (a folder
    # holding a stack trained otherwise is refused naming the setting)
    stack = stackae.pretrain_stack("mnist", out=folder, resume=folder.exists(),
                                   layers=(1000, 500, 250, code), objective="rbm",
                                   epochs=args.rbm_epochs, unroll_epochs=args.unroll_epochs,
                                   tied=not args.untied, linear_code=args.linear_code,
                                   batch_size=args.batch_size, lr=args.lr, seed=seed,
                                   train_size=args.train_size, device=args.device,
                                   quiet=args.quiet)
    stacks[code, seed] = stack, time.perf_counter() - t0
    return stack


def stack_folder(code: int, seed: int) -> str:
    """seed 0's stack-30/, another seed's stack-30-seed1/ ..."""
    return f"stack-{code}" + (f"-seed{seed}" if seed else "")


def scatter(path: Path, panels: list[tuple[str, torch.Tensor]], labels: torch.Tensor) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.6))
    for ax, (title, codes) in zip(axes, panels):
        c = codes.detach().numpy()
        points = ax.scatter(c[:, 0], c[:, 1], c=labels.numpy(), cmap="tab10", s=2, alpha=0.6,
                            vmin=-0.5, vmax=9.5, rasterized=True)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(points, ax=axes, ticks=range(10), label="digit", shrink=0.85)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


FIGURE = """![2-D codes of the test set](figures/codes_2d.png)

The test set's 2-D codes, coloured by digit: the autoencoder's (left) against the first two
principal components (right)."""


def steps(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0; got {text!r}")
    return int(text)


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds >= 0 separated by commas "
                                         f"(e.g. 0,1,2); got {text!r}")
    return seeds


def spread(values: list[float]) -> str:
    """mean ± sd over seeds (the value alone for one seed)."""
    return (f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1
            else f"{values[0]:.2f}")


def logistic_pca_figures(x: torch.Tensor, x_test: torch.Tensor, seed: int, args) -> dict:
    """Logistic PCA's figures for this seed, kept in <out>/logistic-pca-30-seedS.json and reused
    by a rerun that fits it the same way (it takes minutes)."""
    path, fit = args.out / f"logistic-pca-30-seed{seed}.json", {
        "steps": args.logistic_pca_steps, "train_images": len(x), "test_images": len(x_test)}
    kept = json.loads(path.read_text()) if path.exists() else {}
    if kept.get("fit") == fit:
        return kept["figures"]
    t0 = time.perf_counter()
    _, v, b, train_ce = logistic_pca(x, 30, args.logistic_pca_steps, seed)
    codes, *_, test_ce = logistic_pca(x_test, 30, args.logistic_pca_steps, seed, (v, b))
    figures = {"logistic_pca30": squared_error(x_test, torch.sigmoid(torch.addmm(b, codes, v.T))),
               "logistic_pca30_cross_entropy": {"train": train_ce, "test": test_ce},
               "logistic_pca30_seconds": time.perf_counter() - t0}
    path.write_text(json.dumps({"fit": fit, "figures": figures}, indent=1))
    return figures


def measure(seed: int, args, stacks: dict, fits: dict) -> dict:
    """One seed's figures on its own split: PCA and the 30-unit autoencoder (into stacks[30, seed]);
    for the first seed also logistic PCA if asked (it takes minutes; fits[seed] keeps the fit's own
    seconds and this call's) and the 2-unit code with its figure."""
    data = stackae.load_data("mnist", seed=seed, train_size=args.train_size)
    x, x_test, y_test = data.train_x.cpu(), data.test_x.cpu(), data.test_y.cpu()
    mean, directions = pca(x, 30)

    def project(k: int) -> torch.Tensor:  # the test images' first k principal coordinates
        return (x_test - mean) @ directions[:k].T

    row = {"seed": seed, "train_images": len(x), "test_images": len(x_test),
           "pca30": squared_error(x_test, project(30) @ directions + mean),
           "pca2": squared_error(x_test, project(2) @ directions[:2] + mean)}
    ae = autoencoder(30, seed, args, stacks)
    row["autoencoder30"] = squared_error(x_test, ae.reconstruct(x_test))
    if args.logistic_pca_steps and seed == args.seeds[0]:  # a baseline: one split is enough
        t0 = time.perf_counter()
        row |= logistic_pca_figures(x, x_test, seed, args)
        fits[seed] = row["logistic_pca30_seconds"], time.perf_counter() - t0
    if args.two_d and seed == args.seeds[0]:
        ae2 = autoencoder(2, seed, args, stacks)
        row["autoencoder2"] = squared_error(x_test, ae2.reconstruct(x_test))
        codes = torch.cat([ae2.encoder(x_test[a:a + 2000]).detach()
                           for a in range(0, len(x_test), 2000)])
        scatter(args.out / "figures" / "codes_2d.png",
                [(f"784-1000-500-250-2 autoencoder (error {row['autoencoder2']:.1f})", codes),
                 (f"PCA, first two components (error {row['pca2']:.1f})", project(2))], y_test)
    row["kept"] = {code: stacks[code, seed][0].summary.get("unrolled") for code in (30, 2)
                   if (code, seed) in stacks}
    return row


def report(args, command: str, rows: list[dict], stack_seconds: dict, seconds: float) -> str:
    n = len(rows)

    def line(model: str, key: str = "", text: str = "", published: float | None = None) -> str:
        values = [r[key] for r in rows if key in r]
        cells = [model, text or spread(values)]
        if n > 1:  # each seed's figure
            cells.append(", ".join(f"{v:.2f}" for v in values) if len(values) == n else "")
        return "| " + " | ".join(cells + [f"{published:.2f}" if published else ""]) + " |"

    two, lpca = rows[0].get("autoencoder2"), rows[0].get("logistic_pca30")
    table = "\n".join([
        f"| model | {f'stackae, mean ± sd over {n} seeds' if n > 1 else 'stackae'}"
        + (f" | per seed ({', '.join(str(r['seed']) for r in rows)})" if n > 1 else "")
        + " | published |",
        "|---|---|" + ("---|" if n > 1 else "") + "---|",
        line("784-1000-500-250-30 deep autoencoder (RBM-pretrained, unrolled, fine-tuned)",
             "autoencoder30", published=PUBLISHED["autoencoder"]),
        line("PCA, 30 components", "pca30", published=PUBLISHED["pca"]),
        line("logistic PCA, 30 components", text=f"{lpca:.2f}" + (f" (seed {rows[0]['seed']})"
             if n > 1 else "") if lpca else "not fit (--logistic-pca-steps 0)",
             published=PUBLISHED["logistic_pca"]),
        line("784-1000-500-250-2 deep autoencoder", text=f"{two:.2f} (seed {rows[0]['seed']})"
             if two else "not run (--no-2d)"),
        line("PCA, 2 components", "pca2")])
    kept = "; ".join(f"{c}-unit code, seed {r['seed']}: epoch {u['best_epoch']}, validation loss "
                     f"{u['val_recon_loss']:.2f}, {u['final_val_recon_loss']:.2f} at the last"
                     for r in rows for c, u in r["kept"].items() if u and "best_epoch" in u)
    code = ("a linear code (the top RBM's hidden units Gaussian)" if args.linear_code
            else "a sigmoid code")
    first = rows[0]
    ce = first.get("logistic_pca30_cross_entropy")
    about_lpca = "" if not lpca else f"""Logistic PCA (Schein et al. 2003): the pixels
modelled as sigmoid(codes · componentsᵀ + biases), 30 components, fit by {args.logistic_pca_steps}
full-batch Adam steps (lr 0.05) on the pixels' cross-entropy, the components, biases and codes on
the training images; then each test image's 30-number code fit the same way with the components
fixed, as logistic PCA has no encoder; on seed {first['seed']}'s split. Cross-entropy per image at
the last step: training {ce['train']:.2f}, test {ce['test']:.2f} ({
    first['logistic_pca30_seconds'] / 60:.1f} min).

"""
    return f"""# Deep autoencoder vs PCA (Hinton & Salakhutdinov 2006)

Squared reconstruction error per test image (summed over 784 pixels, mean over
{rows[0]["test_images"]:,} MNIST test images); PCA computed by this script on the same
{rows[0]["train_images"]:,} training images (after the seeded validation split every stackae run
uses: each seed's own).

{table}

Recipe here: RBMs (CD-1, Adam lr {args.lr}) for {args.rbm_epochs} epochs per layer, {code}, then the
unrolled autoencoder ({"untied" if args.untied else "tied"} weights, cross-entropy on pixels, Adam lr {args.lr}, batch
{args.batch_size}) for {args.unroll_epochs} epochs, each stack kept at its epoch of lowest validation
loss ({kept}). The paper: 50 RBM epochs per
layer, a linear 30-unit code layer with Gaussian noise, untied weights after unrolling, and 200
epochs of conjugate-gradient fine-tuning. Total time {seconds / 60:.1f} min ({", ".join(
        f"{name}/ {s / 60:.1f} min" for name, s in stack_seconds.items())}).

{about_lpca}{FIGURE if two else "(2-D codes not trained in this run: --no-2d.)"}

Reproduce: `{command}` (resumable). Files: {", ".join(f"`{name}/`" for name in stack_seconds)} (stackae
pretrain run folders with stack.pt, TensorBoard events and metrics; seed 0's `stack-30/`, another
seed's `stack-30-seedS/`), `results.json` (the figures above as data, and per seed){
    f", `logistic-pca-30-seed{rows[0]['seed']}.json` (the logistic PCA fit, reused by a rerun)"
    if args.logistic_pca_steps else ""}.
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/reference/deep-autoencoder"))
    p.add_argument("--rbm-epochs", type=int, default=10)
    p.add_argument("--unroll-epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=seed_list, default=[0], metavar="S,...",
                   help="One 30-unit stack per seed (each on its seed's validation split), "
                        "reported as mean ± sd; the 2-unit code for the first seed only.")
    p.add_argument("--train-size", type=int, default=None,
                   help="Train on the first N training images only (a quick check).")
    p.add_argument("--logistic-pca-steps", type=steps, default=0, metavar="N",
                   help="Fit logistic PCA with 30 components by N full-batch Adam steps on the "
                        "training images, and N more for the test images' codes; the first "
                        "seed's split only (default 0: not fit).")
    p.add_argument("--device", default="auto")
    p.add_argument("--untied", action="store_true",
                   help="Untie each decoder from its encoder before the unrolled fine-tuning, as "
                        "the paper did (the unrolled network then has twice the weights).")
    p.add_argument("--linear-code", action="store_true",
                   help="Linear code units (the top RBM's hidden units Gaussian), as the paper's.")
    p.add_argument("--no-2d", dest="two_d", action="store_false",
                   help="Train only the 30-unit code, not the 2-unit one and its figure.")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0, stacks, fits = time.perf_counter(), {}, {}
    try:
        rows = [measure(seed, args, stacks, fits) for seed in args.seeds]
    except (stackae.ConfigError, stackae.DataError, stackae.CheckpointError,
            stackae.RunError) as e:  # a bad setting, or a folder holding other work
        raise SystemExit(f"error: {e}")
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted; finished layers and stacks are kept in {args.out}; "
                         f"the same command continues")
    results = {k: statistics.mean(r[k] for r in rows if k in r) for k in
               ("autoencoder30", "pca30", "logistic_pca30", "autoencoder2", "pca2") if k in rows[0]}
    # each stack's and logistic PCA fit's own time from its record (one finished by an earlier
    # call of this script, or resumed, counts the time it took then); the rest is this call's
    stack_seconds = {stack_folder(*key): ae.summary["seconds"] for key, (ae, _) in stacks.items()}
    calls = [call for _, call in stacks.values()] + [call for _, call in fits.values()]
    seconds = (time.perf_counter() - t0 - sum(calls) + sum(stack_seconds.values())
               + sum(own for own, _ in fits.values()))
    record = {"squared_error_per_test_image": results, "per_seed": rows, "published": PUBLISHED,
              "settings": vars(args) | {"out": str(args.out)}, "seconds": seconds,
              "stack_seconds": stack_seconds}
    (args.out / "results.json").write_text(json.dumps(record, indent=1))
    flag = {"two_d": "--no-2d"}  # a switch is its flag alone

    def value(v):  # --seeds 0,1
        return ",".join(map(str, v)) if isinstance(v, list) else v
    command = "python scripts/reference/deep_autoencoder.py" + "".join(
        " " + (flag.get(k, f"--{k.replace('_', '-')}") if isinstance(v, bool)
               else f"--{k.replace('_', '-')} {value(v)}")
        for k, v in vars(args).items() if k != "quiet" and v != p.get_default(k))
    (args.out / "REPORT.md").write_text(report(args, command, rows, stack_seconds, seconds))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
