"""The design's other systems: classifier-free guidance, the projection step, VAPO."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medpfgm.cli import main
from medpfgm.config import DDPMConfig, PFGMPPConfig, RunConfig, VAPOConfig, Variant, load_recipe
from medpfgm.data import load_split, to_unit_range
from medpfgm.methods.ddpm import DDPM
from medpfgm.methods.pfgmpp import PFGMPP
from medpfgm.methods.vapo import VAPO
from medpfgm.physics import pfgmpp, poisson
from medpfgm.sample import BFloat16, Guided, solve
from tests.conftest import OracleDenoiser, OracleEpsilon, write_tiny_recipe
from tests.test_cli import assert_one_line_error, run_cli


# --- the projection step -------------------------------------------------------------------------


@pytest.mark.parametrize("aug_dim", [1, 128, math.inf])
def test_typical_noise_norm_is_the_median_of_kernel_draws(aug_dim):
    n_dim, g = 3 * 28 * 28, torch.Generator().manual_seed(0)
    noise = pfgmpp.kernel_noise((4000, n_dim), torch.ones(4000), aug_dim, g, torch.float64)
    drawn = noise.norm(dim=1).median().item()
    assert pfgmpp.typical_noise_norm(n_dim, aug_dim) == pytest.approx(drawn, rel=0.01 if aug_dim != 1 else 0.05)


def real_charges(data_root, k: int = 16):
    split = load_split("bloodmnist", 28, "train", data_root)
    return to_unit_range(split.images[:k]).double().flatten(1)


def nearest_over_spacing(x: torch.Tensor, charges: torch.Tensor) -> float:
    """The largest distance of a sample to its nearest charge, as a fraction of the charges' own spacing."""
    spacing = torch.cdist(charges, charges).fill_diagonal_(math.inf).min()
    return (torch.cdist(x.double().flatten(1), charges).min(1).values.max() / spacing).item()


@pytest.mark.parametrize("aug_dim", [128, "inf"])
def test_projected_euler_keeps_the_oracle_flow_on_the_data_in_few_steps(data_root, aug_dim):
    charges = real_charges(data_root)
    method = PFGMPP(PFGMPPConfig(aug_dim=aug_dim), (3, 28, 28))
    net = OracleDenoiser(method, charges)
    labels = torch.zeros(12, dtype=torch.int64)
    x, nfe = solve(method, net, labels, "euler", 5, generator=torch.Generator().manual_seed(0), variant=Variant(project=True))
    assert nfe == 5  # no extra network call
    assert nearest_over_spacing(x, charges) < 0.01  # every sample ends on a training image


def test_projected_ddim_keeps_the_oracle_chain_on_the_data(data_root):
    charges = real_charges(data_root)
    method = DDPM(DDPMConfig(), (3, 28, 28))
    x, nfe = solve(method, OracleEpsilon(method, charges), torch.zeros(12, dtype=torch.int64), "ddim", 10,
                   generator=torch.Generator().manual_seed(0), variant=Variant(project=True))  # fmt: skip
    assert nfe == 10
    assert nearest_over_spacing(x, charges) < 0.05


def test_projection_puts_each_step_on_its_shell():
    # a drift whose denoiser is the origin: after each projected step ||x|| = radius * t_next exactly
    from medpfgm.sample import projected_euler

    times = torch.tensor([80.0, 10.0, 1.0, 0.1, 0.0], dtype=torch.float64)
    seen = []

    def drift(x, t):
        seen.append(x.flatten(1).norm(dim=1) / t)
        return x / t

    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 123.0
    out = projected_euler(drift, x, times, radius=7.5)
    assert torch.allclose(torch.stack(seen[1:]), torch.full((3, 4), 7.5, dtype=torch.float64))
    assert out.abs().max() < 1e-12  # the last step returns the denoiser's estimate (the origin, to rounding)


# --- classifier-free guidance --------------------------------------------------------------------


class LabelNet(torch.nn.Module):
    """A tiny network whose output depends on x, t and the class: for checking guidance's arithmetic."""

    def __init__(self, k: int):
        super().__init__()
        self.num_class_embeds = k
        self.embed = torch.nn.Embedding(k, 3)

    def forward(self, x, timesteps, class_labels):
        return torch.tanh(x) * (1 + timesteps.view(-1, 1, 1, 1) / 1000) + self.embed(class_labels).view(-1, 3, 1, 1)


def test_guided_network_is_the_cfg_combination_of_two_calls():
    torch.manual_seed(0)
    net = LabelNet(5)
    x, t, c = torch.randn(6, 3, 4, 4), torch.rand(6) * 1000, torch.tensor([0, 1, 2, 3, 0, 1])
    w = 2.5
    cond, uncond = net(x, t, c), net(x, t, torch.full_like(c, 4))
    assert torch.allclose(Guided(net, w, 4)(x, t, c), (1 + w) * cond - w * uncond, atol=1e-6)
    assert torch.allclose(Guided(net, 0.0, 4)(x, t, c), cond)



def test_bf16_network_is_the_autocast_evaluation_returned_as_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(16, 3, 3, padding=1))
    x = torch.randn(4, 3, 8, 8)
    out = BFloat16(net)(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = net(x).float()
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    error = ((out - net(x)).norm() / net(x).norm()).item()
    assert 1e-4 < error < 2e-2  # bf16's 8-bit mantissa: about 4e-3 relative, not float32's 1e-7
    assert BFloat16(Guided(LabelNet(5), 1.0, 4)).nfe_per_call == 2  # a guided step still counts two NFE


def test_bf16_sampling_through_the_cli_draws_the_float32_images_within_a_grey_level(capsys, tmp_path, data_root):
    recipe = write_tiny_recipe(tmp_path / "tiny.toml", "pfgmpp")
    run = tmp_path / "run"
    assert main(["train", "--recipe", str(recipe), "--run", str(run), "--quiet"]) == 0
    images, nfes = [], []
    for args in ([], ["--bf16"]):
        out = tmp_path / f"s{len(images)}.npz"
        code, _, err = run_cli(capsys, "synthesize", "--run", str(run), "-n", "6", "--solver", "heun", "--steps", "4", "--out", str(out), "--quiet", *args)
        assert code == 0, err
        with np.load(out) as f:
            images.append(f["images"].astype(np.int16))
            nfes.append(int(f["nfe"][0]))
    difference = np.abs(images[0] - images[1])
    assert 0 < difference.mean() < 1.0 and nfes == [7, 7]

def test_null_labelled_points_see_every_charge():
    g = torch.Generator().manual_seed(0)
    charges, charge_labels = torch.randn(40, 12, generator=g, dtype=torch.float64), torch.arange(40) % 4
    y, z = torch.randn(6, 12, generator=g, dtype=torch.float64), torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    labels = torch.tensor([-1, 0, -1, 3, 1, -1])
    v_x, v_z = poisson.empirical_field(y, z, charges, labels=labels, charge_labels=charge_labels)
    all_x, all_z = poisson.empirical_field(y, z, charges)
    own_x, own_z = poisson.empirical_field(y, z, charges, labels=labels.clamp_min(0), charge_labels=charge_labels)
    null = labels < 0
    assert torch.allclose(v_x[null], all_x[null]) and torch.allclose(v_z[null], all_z[null])
    assert torch.allclose(v_x[~null], own_x[~null]) and torch.allclose(v_z[~null], own_z[~null])


def test_a_run_trained_with_label_dropout_is_scored_as_a_model_of_its_own(tiny_recipe):
    cfg = load_recipe(tiny_recipe)
    cfg.method, cfg.pfgmpp.aug_dim = "pfgmpp", 128
    assert cfg.model_name(Variant()) == "pfgmpp_d128"
    cfg.train.label_dropout = 0.1  # unguided (w = 0), it is still another network than the run without dropout
    names = [cfg.model_name(Variant(guidance=w)) for w in (0, 2)] + [cfg.model_name(Variant(guidance=0.5, project=True))]
    assert names == ["pfgmpp_d128_ld0.1", "pfgmpp_d128_ld0.1_cfg_w2", "pfgmpp_d128_ld0.1_proj_cfg_w0.5"]


def test_label_dropout_draws_null_classes_only_when_asked(tiny_recipe):
    from medpfgm.train import Trainer

    class Fake:  # the split the trainer needs: images and labels
        images, labels = np.zeros((4, 28, 28, 3), np.uint8), np.zeros(4, np.int64)

    labels = torch.arange(4000) % 8
    for p in (0.0, 0.3):
        cfg = load_recipe(tiny_recipe)
        cfg.method, cfg.train.label_dropout = "pfgmpp", p
        cfg = RunConfig.from_dict(cfg.to_dict())
        trainer = Trainer(cfg, Fake(), torch.device("cpu"))
        before = trainer.data_gen.get_state()
        cond = trainer.conditioning(labels)
        dropped = cond == 8
        assert torch.equal(cond[~dropped], labels[~dropped])
        if p == 0:
            assert not dropped.any() and torch.equal(trainer.data_gen.get_state(), before)  # older runs' streams unchanged
            assert trainer.net.class_embedding.num_embeddings == 8
        else:
            assert abs(dropped.double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / len(labels))
            assert trainer.net.class_embedding.num_embeddings == 9  # the null class


@pytest.mark.parametrize("method", ["pfgm", "pfgmpp", "ddpm", "vapo"])
def test_guidance_through_the_cli(capsys, tmp_path, data_root, method):
    recipe = write_tiny_recipe(tmp_path / "tiny.toml", method)
    run = tmp_path / "run"
    assert main(["train", "--recipe", str(recipe), "--run", str(run), "--label-dropout", "0.2", "--quiet"]) == 0
    solver = {"pfgm": "euler", "pfgmpp": "euler", "ddpm": "ddim", "vapo": "euler"}[method]
    images, nfes = [], []
    for args in ([], ["--guidance", "0"], ["--guidance", "2"]):
        out = tmp_path / f"s{len(images)}.npz"
        code, _, err = run_cli(capsys, "synthesize", "--run", str(run), "-n", "6", "--solver", solver, "--steps", "4", "--out", str(out), "--quiet", *args)
        assert code == 0, err
        with np.load(out) as f:
            images.append(f["images"])
            nfes.append(int(f["nfe"][0]))
    assert np.array_equal(images[0], images[1])  # w = 0 is the unguided sampler, image for image
    assert not np.array_equal(images[0], images[2])
    assert nfes == [4, 4, 8]  # a guided step costs two network evaluations


def test_guidance_and_projection_refused_where_they_do_not_apply(capsys, tmp_path, data_root):
    recipe = write_tiny_recipe(tmp_path / "tiny.toml", "pfgmpp")
    run = tmp_path / "run"
    assert main(["train", "--recipe", str(recipe), "--run", str(run), "--quiet"]) == 0
    cases = [
        (["--guidance", "2"], ["--guidance 2 needs", "label_dropout > 0", "label_dropout 0"]),
        (["--guidance", "-1"], ["--guidance must be a finite weight >= 0"]),
        (["--project", "--solver", "heun"], ["--project works with pfgmpp and --solver euler", "not with pfgmpp and heun"]),
    ]
    for args, fragments in cases:
        for command in ("synthesize", "evaluate"):
            code, _, err = run_cli(capsys, command, "--run", str(run), "-n", "10", "--quiet", *args)
            assert_one_line_error(code, err, *fragments)
    code, _, err = run_cli(capsys, "train", "--recipe", str(recipe), "--run", str(tmp_path / "x"), "--label-dropout", "1.5", "--quiet")
    assert_one_line_error(code, err, "train.label_dropout = 1.5", "[0, 1)")


# --- VAPO ----------------------------------------------------------------------------------------


class ScaledIdentity(torch.nn.Module):
    """U(x, t) = a x: psi = -(1 - a)^2 ||x||^2 / (2 s), so grad psi = -(1 - a)^2 x / s, s = max(1 - t, 0.05)."""

    def __init__(self, a: float):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))

    def forward(self, x, timesteps, class_labels):
        return self.a * x


def test_vapo_velocity_is_the_gradient_of_its_potential():
    method = VAPO(VAPOConfig(), (3, 4, 4))
    x = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.2, 0.5, 0.9, 0.99])  # 0.99: past the floor, s = 0.05
    net = ScaledIdentity(0.3)
    closed = -(0.7**2) * x / torch.tensor([1.0, 0.8, 0.5, 0.1, 0.05]).view(-1, 1, 1, 1)
    assert torch.allclose(method.velocity(net, x, t, None), closed, atol=1e-5)
    assert torch.allclose(method.drift(net, x[2:3], 0.5, None), closed[2:3], atol=1e-5)  # t = 0.5


def test_vapo_velocity_matches_float64_finite_differences():
    torch.manual_seed(0)
    unet = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(8, 3, 3, padding=1)).double()

    class Net(torch.nn.Module):
        def forward(self, x, timesteps, class_labels):
            return unet(x.double()) * (1 + timesteps.double().view(-1, 1, 1, 1) / 1000)

    method, net = VAPO(VAPOConfig(), (3, 4, 4)), Net()
    x, t = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.tensor([0.3, 0.8])
    v = method.velocity(net, x, t, None)
    h, fd = 1e-6, torch.zeros_like(x)
    for i in range(x[0].numel()):
        e = torch.zeros_like(x).flatten(1)
        e[:, i] = h
        e = e.view_as(x)
        fd.view(2, -1)[:, i] = ((method.potential(net, x + e, t, None) - method.potential(net, x - e, t, None)) / (2 * h)).double()
    assert torch.allclose(v.double(), fd, rtol=1e-4, atol=1e-4)


def test_vapo_loss_trains_the_potential_gradient_by_double_backward():
    method = VAPO(VAPOConfig(), (3, 4, 4))
    net = ScaledIdentity(0.3)
    images = torch.rand(16, 3, 4, 4) * 2 - 1
    loss = method.loss(net, images, torch.zeros(16, dtype=torch.int64), torch.Generator().manual_seed(0))
    loss.backward()
    assert net.a.grad is not None and net.a.grad.abs() > 0  # the parameter is reached through grad psi
    # independent: the same draws, the closed-form velocity of U = a x
    g = torch.Generator().manual_seed(0)
    t = torch.rand(16, generator=g) * (1 - 1e-3)
    eps = torch.randn(images.shape, generator=g)
    x_t = t.view(-1, 1, 1, 1) * images + (1 - t.view(-1, 1, 1, 1)) * eps
    s = torch.maximum(1 - t, torch.tensor(0.05)).view(-1, 1, 1, 1)
    expected = (-(0.7**2) * x_t / s - (images - eps)).pow(2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
