"""Part II's study (Huang et al. 2021, IE-KD: inheritance and exploration): which networks are trained, at what
scale, and how the paper's claims are judged. The libraries it stands on — the methods (:mod:`kdnb.distill`), LRP
(:mod:`kdnb.explain`), the representation measures and verdict rules (:mod:`kdnb.analysis`) — know nothing of it.

- :mod:`~kdnb.studies.part2.scale` — Part II's scale (data, subsets, schedules, seeds, pairs, teachers, the
  shared auto-encoder run), every student's spec (:func:`~kdnb.studies.part2.scale.part2_student`) and the
  teacher premise;
- :mod:`~kdnb.studies.part2.tables` — Tables 1, 4, 5, 6 and supplement Table 2: run lists, the paper's numbers,
  the measured frames (chapters II.2–II.4); :mod:`~kdnb.studies.part2.table_verdicts` — their claims;
- :mod:`~kdnb.studies.part2.compact` — §3.1: what the teacher's factor auto-encoder keeps (chapter II.1);
- :mod:`~kdnb.studies.part2.analyses` — §4.7: LRP maps, CKA, active neurons, sharpness (chapter II.5).
"""
