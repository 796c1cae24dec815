"""Training: the single-run trainer with its run folder (:mod:`.training`) and the loop for any learned optimiser (:mod:`.learned`)."""
