"""The ``curate`` job: raw talking-head footage -> a LatentSync training set (:mod:`.job`), stage by stage
(:mod:`.stages`), with stored measurements (:mod:`.records`) and derived decisions (:mod:`.decide`)."""
