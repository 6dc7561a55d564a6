"""The physics of the methods as small pure tensor functions: no nn.Module, no I/O, no config objects.

``poisson``: PFGM (augmented dimension D = 1) — perturbation, empirical normalised Poisson field,
hemisphere prior, backward ODE in t = ln z, hyper-parameter rule.
``pfgmpp``: PFGM++ (any D; D = inf is EDM) — Student-t kernel, EDM preconditioning and loss weight,
rho-schedule, prior. PFGM's prior is this kernel at D = 1.
"""
