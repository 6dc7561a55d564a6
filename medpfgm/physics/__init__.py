"""The physics of the methods as small pure tensor functions: no nn.Module, no I/O, no config objects.

``poisson``: PFGM (augmented dimension D = 1) — perturbation, empirical normalised Poisson field,
hemisphere prior, backward ODE in t = ln z, hyper-parameter rule.
"""
