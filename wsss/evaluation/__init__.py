"""``wsss.evaluate`` as a library: the run (:mod:`.run`), its report and files (:mod:`.report`) and its
W&B dashboard (:mod:`.dashboard`); the numbers themselves are :mod:`wsss.metrics.folders`."""
