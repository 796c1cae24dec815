"""From a configuration to the objects a run works on, built once: the problem and the initialised learner (:mod:`.experiment`), with the authors' own draws (:mod:`.paper_draw`)."""
