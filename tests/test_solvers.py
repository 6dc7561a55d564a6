"""Solvers against closed forms, and their NFE counts."""

from __future__ import annotations

import math

import pytest
import torch

from medpfgm.sample import Counted, euler, heun, rk45


def linear_drift(x, t):
    """dx/dt = -x + sin t: x(t) = C e^{-t} + (sin t - cos t)/2."""
    return -x + math.sin(t)


def exact(x0, t0, t1):
    c = (x0 - (math.sin(t0) - math.cos(t0)) / 2) * math.exp(t0)
    return c * math.exp(-t1) + (math.sin(t1) - math.cos(t1)) / 2


@pytest.mark.parametrize("solver,order", [(euler, 1), (heun, 2)])
def test_fixed_step_solvers_converge_at_their_order(solver, order):
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64)
    t0, t1 = 2.0, -1.0  # backwards in time, as the samplers integrate
    want = torch.tensor([exact(v, t0, t1) for v in x0.tolist()], dtype=torch.float64)
    errors = []
    for steps in (20, 40):
        got = solver(linear_drift, x0, torch.linspace(t0, t1, steps + 1, dtype=torch.float64))
        errors.append((got - want).abs().max().item())
    assert errors[1] < errors[0]
    assert errors[0] / errors[1] == pytest.approx(2**order, rel=0.25)


def test_rk45_meets_its_tolerance_and_counts_nfe():
    x0 = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    drift = Counted(linear_drift)
    got = rk45(drift, x0, 2.0, -1.0, rtol=1e-8, atol=1e-8)
    want = torch.tensor([[exact(1.5, 2.0, -1.0), exact(-0.5, 2.0, -1.0)]], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert got.shape == x0.shape and drift.calls > 6


def test_nfe_of_fixed_step_solvers():
    times = torch.linspace(1.0, 0.0, 11, dtype=torch.float64)
    for solver, expected in ((euler, 10), (heun, 19)):
        drift = Counted(linear_drift)
        solver(drift, torch.zeros(3, dtype=torch.float64), times)
        assert drift.calls == expected
