import itertools

import pytest
import torch

from stackae.autoencoders import (ACT, AutoencoderObjective, Layer, RBMObjective,
                                  contractive_penalty, corrupt, kl_sparsity)


def test_masking_zeroes_the_requested_fraction_and_keeps_the_rest():
    x = torch.rand(200, 500) + 0.1  # no zeros to begin with
    g = torch.Generator().manual_seed(0)
    xc = corrupt(x, "masking", 0.3, g)
    zero = xc == 0
    frac = zero.float().mean().item()
    # 100,000 Bernoulli(0.3) draws: std of the fraction is 0.0014, so 0.01 is about 7 sigma.
    assert abs(frac - 0.3) < 0.01
    assert torch.equal(xc[~zero], x[~zero])  # untouched inputs unchanged, no rescaling


def test_salt_pepper_and_gaussian():
    x = torch.full((100, 400), 0.5)
    g = torch.Generator().manual_seed(0)
    sp = corrupt(x, "salt-pepper", 0.2, g)
    hit = sp != 0.5
    assert abs(hit.float().mean().item() - 0.2) < 0.01
    assert set(sp[hit].unique().tolist()) == {0.0, 1.0}
    gn = corrupt(x, "gaussian", 0.1, g) - x
    assert abs(gn.std().item() - 0.1) < 0.005 and abs(gn.mean().item()) < 0.005
    assert corrupt(x, "masking", 0.0, g) is x


def test_kl_sparsity_matches_direct_computation_and_is_zero_at_target():
    h = torch.rand(64, 30)
    rho = 0.1
    m = h.mean(0)
    direct = sum(rho * torch.log(torch.tensor(rho) / m[j]) + (1 - rho) *
                 torch.log(torch.tensor(1 - rho) / (1 - m[j])) for j in range(30))
    assert torch.allclose(kl_sparsity(h, rho, "sigmoid"), direct, rtol=1e-5)
    assert kl_sparsity(torch.full((8, 5), rho), rho, "sigmoid").abs().item() < 1e-6


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_contractive_penalty_matches_autograd_jacobian(activation):
    torch.manual_seed(0)
    layer = Layer(7, 5, activation).double()
    x = torch.randn(4, 7, dtype=torch.double)
    h = layer.encode(x)
    closed = contractive_penalty(h, layer.encoder.weight, activation)
    frob = [torch.autograd.functional.jacobian(layer.encode, x[i]).pow(2).sum() for i in range(4)]
    assert torch.allclose(closed, torch.stack(frob).mean(), rtol=1e-9)


def test_rbm_free_energy_matches_explicit_sum():
    torch.manual_seed(0)
    layer = Layer(3, 2, "sigmoid").double()
    W, c, b = layer.encoder.weight, layer.encoder.bias, layer.decoder_bias
    with torch.no_grad():
        b.copy_(torch.randn(3))
    for v in itertools.product([0.0, 1.0], repeat=3):
        v = torch.tensor(v, dtype=torch.double)
        # F(v) = -log sum_h exp(-E(v, h)),  E = -b.v - c.h - h.W.v
        terms = [torch.dot(b, v) + torch.dot(c, h) + h @ W @ v
                 for h in (torch.tensor(hh, dtype=torch.double)
                           for hh in itertools.product([0.0, 1.0], repeat=2))]
        explicit = -torch.logsumexp(torch.stack(terms), 0)
        assert torch.allclose(RBMObjective.free_energy(layer, v[None])[0], explicit)


def test_cd_lowers_reconstruction_error_on_mnist_slice():
    from stackae import data as D
    from stackae.config import PretrainConfig
    d = D.load(PretrainConfig(train_size=2000, val_size=500), torch.device("cpu"))
    torch.manual_seed(0)
    layer = Layer(784, 100, "sigmoid")
    torch.nn.init.normal_(layer.encoder.weight, std=0.01)
    torch.nn.init.zeros_(layer.encoder.bias)
    obj = RBMObjective(k=1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.5)
    g = torch.Generator().manual_seed(0)
    _, before = obj(layer, d.val_x, g)
    for _ in range(3):
        for xb in d.train_x.split(50):
            loss, _ = obj(layer, xb, g)
            opt.zero_grad()
            loss.backward()
            opt.step()
    _, after = obj(layer, d.val_x, g)
    assert after < 0.7 * before


def test_pcd_keeps_its_chains_across_batches():
    torch.manual_seed(0)
    layer = Layer(20, 10, "sigmoid")
    obj = RBMObjective(k=1, persistent=True)
    g = torch.Generator().manual_seed(0)
    x1 = (torch.rand(8, 20) < 0.5).float()
    obj(layer, x1, g)
    chains = obj.chains.clone()
    assert not torch.equal(chains, x1)  # chains moved by a Gibbs step, not reset to the data
    x2 = torch.zeros(8, 20)
    obj(layer, x2, g)
    # With PCD the negative phase continues from the stored chains, not from the new batch:
    # one Gibbs step from `chains` with the same generator state gives the new chains.
    g_replay = torch.Generator().manual_seed(0)
    obj2 = RBMObjective(k=1, persistent=True)
    obj2(layer, x1, g_replay)
    expect = RBMObjective.gibbs(layer, obj2.chains.clone(), g_replay, 1)
    assert torch.equal(obj.chains, expect)


def test_objective_losses_are_finite_and_penalties_add():
    torch.manual_seed(0)
    layer = Layer(30, 10, "sigmoid")
    x = torch.rand(16, 30)
    g = torch.Generator().manual_seed(0)
    plain, r = AutoencoderObjective("plain")(layer, x, g)
    assert torch.equal(plain, r)
    sparse, r2 = AutoencoderObjective("sparse", sparsity_weight=2.0)(layer, x, g)
    assert torch.allclose(sparse - r2, 2.0 * kl_sparsity(layer.encode(x), 0.05, "sigmoid"))
    cae, r3 = AutoencoderObjective("contractive", contraction=0.5)(layer, x, g)
    assert cae > r3
    assert set(ACT) == {"sigmoid", "tanh", "relu"}
