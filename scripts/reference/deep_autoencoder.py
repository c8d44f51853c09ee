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


def autoencoder(code: int, args, out: Path) -> stackae.Stack:
    folder = out / f"stack-{code}"
    try:  # a finished stack is loaded, an interrupted one resumed, if trained as asked now
        return stackae.pretrain_stack("mnist", out=folder, resume=folder.exists(),
                                      layers=(1000, 500, 250, code), objective="rbm",
                                      epochs=args.rbm_epochs, unroll_epochs=args.unroll_epochs,
                                      tied=not args.untied, linear_code=args.linear_code,
                                      batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                      device=args.device, quiet=args.quiet)
    except stackae.ConfigError as e:
        raise SystemExit(f"error: {folder} holds a stack trained otherwise: {e}; "
                         "give another --out")


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/reference/deep-autoencoder"))
    p.add_argument("--rbm-epochs", type=int, default=10)
    p.add_argument("--unroll-epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
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
    t0 = time.perf_counter()
    data = stackae.load_data("mnist", seed=args.seed)  # the split every stack run uses
    x, x_test, y_test = data.train_x.cpu(), data.test_x.cpu(), data.test_y.cpu()
    mean, directions = pca(x, 30)
    results = {"pca30": squared_error(
        x_test, (x_test - mean) @ directions.T @ directions + mean)}
    t1 = time.perf_counter()
    ae30 = autoencoder(30, args, args.out)
    spent = time.perf_counter() - t1  # counted from the stacks' own records below
    results["autoencoder30"] = squared_error(x_test, ae30.reconstruct(x_test))
    results["pca2"] = squared_error(x_test, (x_test - mean) @ directions[:2].T @ directions[:2]
                                    + mean)
    t1 = time.perf_counter()
    ae2 = autoencoder(2, args, args.out) if args.two_d else None
    spent += time.perf_counter() - t1
    if ae2 is not None:
        results["autoencoder2"] = squared_error(x_test, ae2.reconstruct(x_test))
        codes = torch.cat([ae2.encoder(x_test[a:a + 2000]).detach()
                           for a in range(0, len(x_test), 2000)])
        scatter(args.out / "figures" / "codes_2d.png",
                [(f"784-1000-500-250-2 autoencoder (error {results['autoencoder2']:.1f})", codes),
                 (f"PCA, first two components (error {results['pca2']:.1f})",
                  (x_test - mean) @ directions[:2].T)], y_test)
    # each stack's own time from its summary.json (a stack finished by an earlier call of this
    # script, or resumed, counts the time it took then); the rest is this call's
    stack_seconds = {code: ae.summary["seconds"] for code, ae in (("30", ae30), ("2", ae2))
                     if ae is not None and ae.summary}
    seconds = sum(stack_seconds.values()) + time.perf_counter() - t0 - spent
    record = {"squared_error_per_test_image": results, "published": PUBLISHED,
              "settings": vars(args) | {"out": str(args.out)}, "train_images": len(x),
              "test_images": len(x_test), "seconds": seconds, "stack_seconds": stack_seconds,
              "stacks": {"30": ae30.summary and ae30.summary.get("unrolled"),
                         "2": ae2 and ae2.summary and ae2.summary.get("unrolled")}}
    (args.out / "results.json").write_text(json.dumps(record, indent=1))
    flag = {"two_d": "--no-2d"}  # a switch is its flag alone
    command = "python scripts/reference/deep_autoencoder.py" + "".join(
        " " + (flag.get(k, f"--{k.replace('_', '-')}") if isinstance(v, bool)
               else f"--{k.replace('_', '-')} {v}")
        for k, v in vars(args).items() if k != "quiet" and v != p.get_default(k))
    kept = ", ".join(f"{c}-unit code: epoch {u['best_epoch']}, validation loss "
                     f"{u['val_recon_loss']:.2f}, {u['final_val_recon_loss']:.2f} at the last"
                     for c, u in record["stacks"].items() if u and "best_epoch" in u)
    code = ("a linear code (the top RBM's hidden units Gaussian)" if args.linear_code
            else "a sigmoid code")
    (args.out / "REPORT.md").write_text(f"""# Deep autoencoder vs PCA (Hinton & Salakhutdinov 2006)

Squared reconstruction error per test image (summed over 784 pixels, mean over
{len(x_test):,} MNIST test images); PCA computed by this script on the same {len(x):,} training
images (after the seeded validation split every stackae run uses).

| model | stackae | published |
|---|---|---|
| 784-1000-500-250-30 deep autoencoder (RBM-pretrained, unrolled, fine-tuned) | {results['autoencoder30']:.2f} | {PUBLISHED['autoencoder']:.2f} |
| PCA, 30 components | {results['pca30']:.2f} | {PUBLISHED['pca']:.2f} |
| logistic PCA, 30 components | not run | {PUBLISHED['logistic_pca']:.2f} |
| 784-1000-500-250-2 deep autoencoder | {f"{results['autoencoder2']:.2f}" if ae2 else "not run (--no-2d)"} | |
| PCA, 2 components | {results['pca2']:.2f} | |

Recipe here: RBMs (CD-1, Adam lr {args.lr}) for {args.rbm_epochs} epochs per layer, {code}, then the
unrolled autoencoder ({"untied" if args.untied else "tied"} weights, cross-entropy on pixels, Adam lr {args.lr}, batch
{args.batch_size}) for {args.unroll_epochs} epochs, each stack kept at its epoch of lowest validation
loss ({kept}); seed {args.seed}. The paper: 50 RBM epochs per
layer, a linear 30-unit code layer with Gaussian noise, untied weights after unrolling, and 200
epochs of conjugate-gradient fine-tuning. Total time {seconds / 60:.1f} min ({", ".join(
        f"{code}-unit code's stack {s / 60:.1f} min" for code, s in stack_seconds.items())}).

{FIGURE if args.two_d else "(2-D codes not trained in this run: --no-2d.)"}

Reproduce: `{command}` (resumable). Files: `stack-30/`, `stack-2/` (stackae pretrain run folders
with stack.pt, TensorBoard events and metrics), `results.json` (the figures above as data).
""")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
