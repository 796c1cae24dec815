"""Results on disk: atomic writes and user arrays (:mod:`.io`), locked resumable run folders (:mod:`.runfolder`)."""
