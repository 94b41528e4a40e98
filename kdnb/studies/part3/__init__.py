"""Part III's study (Gu, Wu, Tresp, ACCV 2020: introspective learning): which networks are trained, at what
scale, and how the paper's claims are judged. The libraries it stands on — the methods (:mod:`kdnb.distill`), the
explanation maps and similarities (:mod:`kdnb.explain`), the verdict rules (:mod:`kdnb.analysis`) — know nothing
of it.

- :mod:`~kdnb.studies.part3.scale` — Part III's scale (data, subsets, schedules, seeds, teachers, the evaluation
  set), every run's spec, and the two premises (teacher ahead of the CE student; the CE runs over-fit);
- :mod:`~kdnb.studies.part3.dissection` — §3 and §5.4: Table 1 (CWTM, DKPP), Table 6 (LE-Permut), the warm-up
  ablation, the frames and figures of chapters III.1 and III.4;
- :mod:`~kdnb.studies.part3.comparisons` — §5.1–5.3: Tables 2–5 (regularizers, peers, teachers), the sweeps and
  their best-of selection, each table's premise, and the ledger rows of claims over a family of comparisons.
"""
