"""Which memory layout of K-stacked weights trains faster: (K, out, in), nn.Linear's, multiplied
by its transposed view, or (K, in, out), multiplied as it is (what stackae's fine-tuning uses).
One network (K = 1) is F.linear in the first layout, as stackae had it, and a plain GEMM in the
second. Timed: one fine-tuning step (forward, backward, fused SGD) of the 784-1000-1000-500-10
sigmoid network, the two layouts alternating in one process, the median of the repeats (this
2-core machine's run-to-run spread is wide, so single runs cannot tell them apart).

    python scripts/layouts.py --ks 1,8 --batches 20,128
    python scripts/layouts.py --cliff     # a stacked gradient over glibc's 32 MiB mmap threshold

--cliff times the weight gradient of a 1000x1000 layer, K networks at once, per network: past
K = 8 (32 MiB in float32) glibc's malloc maps each new gradient from the system and unmaps it
when freed, so every step pays the page faults anew; stackae's CPU default caps K below that.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

DIMS = (784, 1000, 1000, 500, 10)


def make_step(layout: str, K: int, B: int, device):
    g = torch.Generator().manual_seed(0)
    shapes = [(K, o, i) if layout == "out-in" else (K, i, o) for i, o in zip(DIMS, DIMS[1:])]
    W = [torch.nn.Parameter((torch.randn(s, generator=g) * 0.03).to(device)) for s in shapes]
    b = [torch.nn.Parameter(torch.zeros(K, o, device=device)) for o in DIMS[1:]]
    opt = torch.optim.SGD(W + b, lr=0.1, momentum=0.9, fused=True)
    x = torch.rand(K, B, DIMS[0], generator=g).to(device)
    y = torch.randint(0, 10, (K, B), generator=g).to(device)

    def step():
        h = x
        for j, (w, c) in enumerate(zip(W, b)):
            if layout == "out-in":  # as stackae did: F.linear for one network
                h = (F.linear(h[0], w[0], c[0]).unsqueeze(0) if K == 1 else
                     torch.baddbmm(c.unsqueeze(1), h, w.transpose(1, 2)))
            else:
                h = (torch.addmm(c[0], h[0], w[0]).unsqueeze(0) if K == 1 else
                     torch.baddbmm(c.unsqueeze(1), h, w))
            if j < len(W) - 1:
                h = torch.sigmoid(h)
        loss = F.cross_entropy(h.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def cliff(batches, repeats: int = 30) -> None:
    for B in batches:
        for K in (1, 4, 7, 8, 9, 10):
            x, g = torch.randn(K, B, 1000), torch.randn(K, B, 1000)
            for _ in range(3):
                torch.bmm(g.transpose(1, 2), x)
            t0 = time.perf_counter()
            for _ in range(repeats):
                torch.bmm(g.transpose(1, 2), x)
            ms = (time.perf_counter() - t0) / repeats * 1e3
            print(f"batch {B:<4} K={K:<3} ({4 * K * 1000 * 1000 / 2**20:.0f} MiB) weight gradient "
                  f"{ms:7.3f} ms, {ms / K:.3f} ms per network")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="1,8")
    ap.add_argument("--batches", default="20,128")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20, help="steps timed per repeat")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cliff", action="store_true", help="time a 1000x1000 layer's K-stacked "
                    "weight gradient against K instead")
    args = ap.parse_args(argv)
    if args.cliff:
        return cliff(map(int, args.batches.split(",")))
    device = torch.device(args.device)
    for K in map(int, args.ks.split(",")):
        for B in map(int, args.batches.split(",")):
            steps = {name: make_step(name, K, B, device) for name in ("out-in", "in-out")}
            ms = {name: [] for name in steps}
            for _ in range(args.repeats):
                for name, step in steps.items():
                    step()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        step()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    ms[name].append((time.perf_counter() - t0) / args.steps * 1e3)
            med = {name: statistics.median(v) for name, v in ms.items()}
            print(f"K={K:<3} batch {B:<4} (K, out, in) {med['out-in']:7.2f} ms   (K, in, out) "
                  f"{med['in-out']:7.2f} ms   {med['out-in'] / med['in-out']:.2f}x  "
                  f"[{K * B / med['in-out'] * 1e3:,.0f} samples/s]")


if __name__ == "__main__":
    main()
