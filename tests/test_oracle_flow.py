"""Oracle flows: the backward ODE driven by the exact empirical field (in place of the network) must
carry prior samples onto the charges, in the proportions of the charges."""

from __future__ import annotations

import math

import pytest
import torch

from medpfgm.config import PFGMConfig
from medpfgm.data import load_split, to_unit_range
from medpfgm.methods.pfgm import PFGM, resolve_scales
from medpfgm.sample import solve
from tests.conftest import OracleNet


def test_toy_2d_mixture_lands_on_the_charges_in_proportion():
    # two clusters: three charges near (-2, 0) and one at (+2, 0): 3/4 of the mass must go left
    charges = torch.tensor([[-2.0, 0.0], [-2.0, 0.3], [-2.3, 0.0], [2.0, 0.0]], dtype=torch.float64)
    labels = torch.zeros(4, dtype=torch.int64)
    # in 2-D, field lines can reach the plane at a shallow angle: a sample stopped at z_min sits
    # about z_min * cot(angle) from its charge, so the toy flow runs down to z = 1e-5
    cfg = PFGMConfig(m_max=200, z_max=40.0, upper_norm=1e4, z_min=1e-5, z_exp=0.0)
    method = PFGM(cfg, (2, 1, 1), batch_size=1)
    net = OracleNet(method, charges, labels)
    n = 600
    x, nfe = solve(method, net, torch.zeros(n, dtype=torch.int64), "rk45", rtol=1e-6, atol=1e-6, generator=torch.Generator().manual_seed(0))
    x = x.double().flatten(1)
    nearest = torch.cdist(x, charges).min(1).values
    assert nearest.max() < 0.05  # every sample ends on a charge (charges are >= 0.3 apart)
    left = (x[:, 0] < 0).double().mean().item()
    assert abs(left - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)
    assert nfe > 10


@pytest.mark.parametrize("solver,steps", [("euler", 50), ("heun", 25), ("rk45", 0)])
def test_real_images_are_recovered_by_class(data_root, solver, steps):
    split = load_split("bloodmnist", 28, "train", data_root)
    charges = to_unit_range(split.images[:16]).double().flatten(1)
    labels = torch.as_tensor(split.labels[:16])
    cfg = resolve_scales(PFGMConfig(), float(charges.norm(dim=1).mean()), charges.shape[1])
    method = PFGM(cfg, (3, 28, 28), batch_size=16)
    net = OracleNet(method, charges, labels)
    x, nfe = solve(method, net, labels[:8], solver, steps, 1e-4, 1e-4, torch.Generator().manual_seed(0))
    dist = torch.cdist(x.double().flatten(1), charges)
    spacing = torch.cdist(charges, charges).fill_diagonal_(math.inf).min()
    assert dist.min(1).values.max() < 0.01 * spacing  # each sample sits on one training image
    assert torch.equal(labels[dist.argmin(1)], labels[:8])  # of the requested class
    assert nfe == {"euler": steps, "heun": 2 * steps - 1}.get(solver, nfe)


@pytest.mark.parametrize("time_input,input_scale", [("z", "raw"), ("lnz", "edm"), ("z", "edm")])
def test_every_network_input_encoding_keeps_the_flow(data_root, time_input, input_scale):
    # the oracle decodes z and x the documented way; a method that encoded them otherwise would
    # hand it the wrong z or a rescaled point, and the flow would miss the training images
    split = load_split("bloodmnist", 28, "train", data_root)
    charges = to_unit_range(split.images[:16]).double().flatten(1)
    labels = torch.as_tensor(split.labels[:16])
    cfg = PFGMConfig(time_input=time_input, input_scale=input_scale)
    method = PFGM(resolve_scales(cfg, float(charges.norm(dim=1).mean()), charges.shape[1]), (3, 28, 28), batch_size=16)
    x, _ = solve(method, OracleNet(method, charges, labels), labels[:8], "euler", 50, generator=torch.Generator().manual_seed(0))
    dist = torch.cdist(x.double().flatten(1), charges)
    spacing = torch.cdist(charges, charges).fill_diagonal_(math.inf).min()
    assert dist.min(1).values.max() < 0.01 * spacing
    assert torch.equal(labels[dist.argmin(1)], labels[:8])


TOY = torch.tensor([[-0.6, -0.6], [-0.6, -0.3], [-0.9, -0.6], [0.7, 0.5]], dtype=torch.float64)


def assert_lands_on_toy(x: torch.Tensor, tol: float, fraction: float = 1.0) -> None:
    x = x.double().flatten(1)
    assert (torch.cdist(x, TOY).min(1).values < tol).double().mean() >= fraction
    left = (x[:, 0] < 0).double().mean().item()  # 3 of 4 toy points are on the left
    assert abs(left - 0.75) < 4 * math.sqrt(0.75 * 0.25 / len(x))


@pytest.mark.parametrize("aug_dim,solver,steps", [(1, "heun", 40), (128, "heun", 18), ("inf", "heun", 18), (128, "euler", 200), (128, "rk45", 0)])
def test_pfgmpp_oracle_flow_lands_on_toy_data(aug_dim, solver, steps):
    from medpfgm.config import PFGMPPConfig
    from medpfgm.methods.pfgmpp import PFGMPP
    from tests.conftest import OracleDenoiser

    method = PFGMPP(PFGMPPConfig(aug_dim=aug_dim), (2, 1, 1))
    net = OracleDenoiser(method, TOY)
    x, nfe = solve(method, net, torch.zeros(500, dtype=torch.int64), solver, steps, 1e-5, 1e-5, torch.Generator().manual_seed(0))
    # D = 1 has Cauchy-tailed prior radii R: a far start ends about (R / sigma_max) * sigma_min from
    # the data, so a few of 500 samples stop short; larger D has no such tail
    assert_lands_on_toy(x, tol=0.02, fraction=0.98 if aug_dim == 1 else 1.0)
    assert nfe == {"heun": 2 * steps - 1, "euler": steps}.get(solver, nfe)


@pytest.mark.parametrize("solver,steps", [("ddpm", 1000), ("ddpm", 100), ("ddim", 50)])
def test_ddpm_oracle_chain_lands_on_toy_data(solver, steps):
    from medpfgm.config import DDPMConfig
    from medpfgm.methods.ddpm import DDPM
    from tests.conftest import OracleEpsilon

    method = DDPM(DDPMConfig(), (2, 1, 1))
    net = OracleEpsilon(method, TOY)
    x, nfe = solve(method, net, torch.zeros(400, dtype=torch.int64), solver, steps, generator=torch.Generator().manual_seed(0))
    assert_lands_on_toy(x, tol=0.03)
    assert nfe == steps


def test_official_half_sum_loss_is_the_mean_loss_times_half_the_outputs(data_root):
    # the same draws and network: "half_sum" (official) is (N + w) / 2 times "mean", for any v_z weight w
    split = load_split("bloodmnist", 28, "train", data_root)
    images = to_unit_range(split.images[:64])
    labels = torch.as_tensor(split.labels[:64])

    class Constant(torch.nn.Module):  # a network that predicts 0.1 everywhere (v_z = 0.1 too)
        def forward(self, x, timesteps, class_labels):
            return torch.full((len(x), 4, 28, 28), 0.1)

    for w in (1.0, 48.0):
        losses = {}
        for reduction in ("mean", "half_sum"):
            cfg = resolve_scales(PFGMConfig(field_batch=64, z_loss_weight=w, loss_reduction=reduction), 28.9, 3 * 28 * 28)
            method = PFGM(cfg, (3, 28, 28), batch_size=16)
            losses[reduction] = method.loss(Constant(), images, labels, torch.Generator().manual_seed(0)).item()
        assert losses["half_sum"] == pytest.approx(losses["mean"] * (3 * 28 * 28 + w) / 2, rel=1e-5)
