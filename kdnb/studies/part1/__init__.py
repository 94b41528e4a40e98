"""Part I's study (Cheng et al., CVPR 2020): which networks are trained and measured, and how the hypotheses are
judged. The library it stands on — the entropy estimator, the concept metrics, generic concept plots — is
:mod:`kdnb.concepts`.

- :mod:`~kdnb.studies.part1.protocol` — the scales, the teacher / student / baseline runs per seed, the probe
  images, the entropy maps through the analysis cache, the accuracies, the networks below twice chance and the
  premise (teacher ≥ baseline + 3 points, baseline ≥ twice chance);
- :mod:`~kdnb.studies.part1.proxy` — the linearised proxy against the faithful estimator, at every architecture and
  layer, with the trust rule;
- :mod:`~kdnb.studies.part1.dynamics` — trajectories over the checkpoints g_1 … g_M, D_mean / D_std and the H2
  control, ρ and Fig. 4's sets, Table 3, the one rule for Hypotheses 1–3 (Holm over each hypothesis's
  comparisons, paired by seed) and the ledger rows it makes;
- :mod:`~kdnb.studies.part1.plots_dynamics` — the figures of chapters I.3 and I.4.
"""
