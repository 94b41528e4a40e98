"""Part II's study (Huang et al. 2021, IE-KD: inheritance and exploration): which networks are trained, at what
scale, and how the paper's claims are judged. The libraries it stands on — the methods (:mod:`kdnb.distill`), LRP
(:mod:`kdnb.explain`), the representation measures and verdict rules (:mod:`kdnb.analysis`) — know nothing of it.

- :mod:`~kdnb.studies.part2.scale` — Part II's scale (data, subsets, schedules, seeds, pairs, teachers, the
  auto-encoder runs), every run's spec, and the teacher premise.
"""
