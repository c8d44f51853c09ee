import itertools
import math

import pytest
import torch

from stackae.autoencoders import ACT, Layer
from stackae.objectives import (AutoencoderObjective, RBMObjective, contractive_penalty, corrupt,
                                draw_noise, kl_sparsity)
from stackae.train import Streams

CPU = torch.device("cpu")


def layer_of(n_in, n_out, activation="sigmoid", k=1, seed=0):
    layer = Layer(k, n_in, n_out, activation)
    for i in range(k):
        layer.init_slice(i, torch.Generator().manual_seed(seed + i))
    return layer


def noisy(x, kind, level, seed=0):
    """x (n, d) corrupted as one slice's epoch would be."""
    draws = draw_noise(kind, level, Streams([seed], "noise", CPU), *x.shape)
    return corrupt(x, kind, level, tuple(d[0] for d in draws))


def test_masking_zeroes_the_requested_fraction_and_keeps_the_rest():
    x = torch.rand(200, 500) + 0.1  # no zeros to begin with
    xc = noisy(x, "masking", 0.3)
    zero = xc == 0
    frac = zero.float().mean().item()
    # 100,000 Bernoulli(0.3) draws: std of the fraction is 0.0014, so 0.01 is about 7 sigma.
    assert abs(frac - 0.3) < 0.01
    assert torch.equal(xc[~zero], x[~zero])  # untouched inputs unchanged, no rescaling


def test_salt_pepper_and_gaussian():
    x = torch.full((100, 400), 0.5)
    sp = noisy(x, "salt-pepper", 0.2)
    hit = sp != 0.5
    assert abs(hit.float().mean().item() - 0.2) < 0.01
    assert set(sp[hit].unique().tolist()) == {0.0, 1.0}
    gn = noisy(x, "gaussian", 0.1) - x
    assert abs(gn.std().item() - 0.1) < 0.005 and abs(gn.mean().item()) < 0.005
    assert noisy(x, "masking", 0.0) is x


def test_each_slice_draws_its_own_noise_and_the_same_as_alone():
    together = draw_noise("masking", 0.3, Streams([4, 5], "noise", CPU), 10, 20)[0]
    alone = [draw_noise("masking", 0.3, Streams([s], "noise", CPU), 10, 20)[0][0] for s in (4, 5)]
    assert torch.equal(together[0], alone[0]) and torch.equal(together[1], alone[1])
    assert not torch.equal(together[0], together[1])


def test_kl_sparsity_matches_direct_computation_and_is_zero_at_target():
    h = torch.rand(1, 64, 30)
    rho = 0.1
    m = h[0].mean(0)
    direct = sum(rho * torch.log(torch.tensor(rho) / m[j]) + (1 - rho) *
                 torch.log(torch.tensor(1 - rho) / (1 - m[j])) for j in range(30))
    assert torch.allclose(kl_sparsity(h, rho, "sigmoid")[0], direct, rtol=1e-5)
    assert kl_sparsity(torch.full((1, 8, 5), rho), rho, "sigmoid").abs().item() < 1e-6


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "linear"])
def test_contractive_penalty_matches_autograd_jacobian(activation):
    layer = layer_of(7, 5, activation).double()
    x = torch.randn(1, 4, 7, dtype=torch.double)
    h = layer.encode(x)
    closed = contractive_penalty(h, layer.weight, activation)[0]
    frob = [torch.autograd.functional.jacobian(lambda v: layer.encode(v[None, None])[0, 0],
                                               x[0, i]).pow(2).sum() for i in range(4)]
    assert torch.allclose(closed, torch.stack(frob).mean(), rtol=1e-9)


def test_rbm_free_energy_matches_explicit_sum():
    layer = layer_of(3, 2).double()
    W, c, b = layer.weight[0], layer.bias[0], layer.decoder_bias
    with torch.no_grad():
        b.copy_(torch.randn(1, 3))
    b = b[0]
    for v in itertools.product([0.0, 1.0], repeat=3):
        v = torch.tensor(v, dtype=torch.double)
        # F(v) = -log sum_h exp(-E(v, h)),  E = -b.v - c.h - h.W.v
        terms = [torch.dot(b, v) + torch.dot(c, h) + h @ W @ v
                 for h in (torch.tensor(hh, dtype=torch.double)
                           for hh in itertools.product([0.0, 1.0], repeat=2))]
        explicit = -torch.logsumexp(torch.stack(terms), 0)
        assert torch.allclose(RBMObjective.free_energy(layer, v[None, None])[0, 0], explicit)


def test_cd_lowers_reconstruction_error_on_mnist_slice():
    from stackae import data as D
    from stackae.config import PretrainConfig
    d = D.load(PretrainConfig(train_size=2000, val_size=500), CPU)
    layer = Layer(1, 784, 100, "sigmoid")
    layer.init_slice(0, torch.Generator().manual_seed(0), rbm=True)
    obj = RBMObjective(k=1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.5)
    streams = Streams([0], "chains", CPU)
    _, before = obj(layer, d.val_x[None], (), streams)
    for _ in range(3):
        for xb in d.train_x.split(50):
            loss, _ = obj(layer, xb[None], (), streams)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
    _, after = obj(layer, d.val_x[None], (), streams)
    assert after < 0.7 * before


def test_pcd_keeps_its_chains_across_batches():
    layer = layer_of(20, 10)
    obj = RBMObjective(k=1, persistent=True)
    streams = Streams([0], "chains", CPU)
    x1 = (torch.rand(1, 8, 20) < 0.5).float()
    obj(layer, x1, (), streams)
    chains = obj.chains.clone()
    assert not torch.equal(chains, x1)  # chains moved by a Gibbs step, not reset to the data
    x2 = torch.zeros(1, 8, 20)
    obj(layer, x2, (), streams)
    # With PCD the negative phase continues from the stored chains, not from the new batch:
    # one Gibbs step from `chains` with the same stream state gives the new chains.
    replay = Streams([0], "chains", CPU)
    obj2 = RBMObjective(k=1, persistent=True)
    obj2(layer, x1, (), replay)
    expect = RBMObjective.gibbs(layer, obj2.chains.clone(), replay, 1)
    assert torch.equal(obj.chains, expect)


def test_objective_losses_are_finite_and_penalties_add():
    layer = layer_of(30, 10, k=2)
    x = torch.rand(2, 16, 30)
    plain, r = AutoencoderObjective("plain")(layer, x, ())
    assert plain.shape == (2,) and torch.equal(plain, r)
    sparse, r2 = AutoencoderObjective("sparse", sparsity_weight=2.0)(layer, x, ())
    assert torch.allclose(sparse - r2, 2.0 * kl_sparsity(layer.encode(x), 0.05, "sigmoid"))
    cae, r3 = AutoencoderObjective("contractive", contraction=0.5)(layer, x, ())
    assert (cae > r3).all()
    assert set(ACT) == {"sigmoid", "tanh", "relu", "linear"}


def test_slices_are_independent_networks():
    """Slice i's loss and gradient depend only on slice i's weights and batch."""
    layer = layer_of(12, 6, k=3)
    x = torch.rand(3, 5, 12)
    loss, _ = AutoencoderObjective("plain")(layer, x, ())
    loss.sum().backward()
    one = layer.subset([1])
    loss1, _ = AutoencoderObjective("plain")(one, x[1:2], ())
    loss1.sum().backward()
    assert torch.allclose(loss[1], loss1[0])
    assert torch.allclose(layer.weight.grad[1], one.weight.grad[0])


def test_gaussian_hidden_rbm_free_energy_is_the_integral_over_its_linear_units():
    """A top RBM with linear (Gaussian, unit-variance) hidden units: F(v) = -log of the integral
    over h of exp(b.v + c.h + h.W.v - |h|^2 / 2), computed here by quadrature for one hidden unit,
    equals free_energy up to the constant log(2 pi) / 2 (which no gradient sees)."""
    layer = layer_of(3, 1, "linear").double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[[0.8, -1.1, 0.4]]]))
        layer.bias.fill_(0.3)
        layer.decoder_bias.copy_(torch.tensor([[0.2, -0.5, 0.1]]))
    h = torch.linspace(-30, 30, 200001, dtype=torch.double)
    for v in itertools.product([0.0, 1.0], repeat=3):
        v = torch.tensor(v, dtype=torch.double)
        a = layer.weight[0, 0] @ v + layer.bias[0, 0]
        log_integrand = layer.decoder_bias[0] @ v + h * a - h * h / 2
        explicit = -torch.log(torch.trapezoid(torch.exp(log_integrand), h))
        got = RBMObjective.free_energy(layer, v[None, None])[0, 0] - 0.5 * math.log(2 * math.pi)
        assert torch.allclose(got, explicit, atol=1e-8), (v, got, explicit)


def test_cd_of_linear_hidden_units_samples_them_around_their_input_and_has_the_cd_gradient():
    layer = layer_of(6, 4, "linear").double()
    v = (torch.rand(1, 20000, 6, generator=torch.Generator().manual_seed(1)) < 0.5).double()
    a = layer.pre_activation(v)
    # one hidden sample per visible vector: mean a, unit variance (Gaussian units)
    streams = Streams([0], "chains", CPU)
    with torch.no_grad():
        h = a + streams.randn(v.shape[1], 4, dtype=v.dtype)
    noise = h - a
    assert abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02
    # the loss's gradient is CD's: -(<v a>_data - <v a>_model) / B for the weights
    x = v[:, :64]
    loss, _ = RBMObjective(k=1)(layer, x, (), Streams([0], "chains", CPU))
    gw, = torch.autograd.grad(loss.sum(), layer.weight)
    v_model = RBMObjective.gibbs(layer, x, Streams([0], "chains", CPU), 1)
    with torch.no_grad():
        a_data, a_model = layer.pre_activation(x), layer.pre_activation(v_model)
        expect = -(a_data[0].T @ x[0] - a_model[0].T @ v_model[0]) / x.shape[1]
    assert torch.allclose(gw[0], expect, atol=1e-10)


def test_an_untied_rbm_samples_and_reconstructs_through_its_own_transpose():
    """CD trains one matrix: an untied layer's decoder copy plays no part in the RBM's Gibbs
    steps or its reconstruction loss, and gets no gradient from it."""
    tied, untied = Layer(1, 8, 5, tied=True), Layer(1, 8, 5, tied=False)
    tied.init_slice(0, torch.Generator().manual_seed(3), rbm=True)
    untied.init_slice(0, torch.Generator().manual_seed(3), rbm=True)
    with torch.no_grad():
        untied.decoder_weight.normal_()  # a decoder far from W^T
    x = (torch.rand(1, 16, 8) < 0.5).float()
    (lt, rt), (lu, ru) = (RBMObjective(k=2)(layer, x, (), Streams([0], "chains", CPU))
                          for layer in (tied, untied))
    assert torch.equal(lt, lu) and torch.equal(rt, ru)
    lu.sum().backward()
    assert untied.decoder_weight.grad is None and untied.weight.grad is not None
    RBMObjective.copy_decoder(untied)
    assert torch.equal(untied.decoder_weight[0], untied.weight[0].T)
