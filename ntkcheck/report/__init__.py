"""Rendering: run, verify, ntk and bounds tables and figures (:mod:`.run`), sweep tables (:mod:`.sweep`) and figures (:mod:`.sweep_figures`)."""
