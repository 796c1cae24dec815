"""Rendering: run, verify, ntk and bounds tables (:mod:`.run`) and a run's figures (:mod:`.run_figures`), sweep tables
(:mod:`.sweep`) and figures (:mod:`.sweep_figures`), the figures of ``reproduce`` (:mod:`.reproduce_figures`), all drawn
in one style (:mod:`.plots`; the e–η plane's lines: :mod:`.e_eta`). Nothing here computes a number anew."""
