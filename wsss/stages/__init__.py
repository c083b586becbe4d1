"""``wsss.pipeline`` as a library: the stages' command lines (:mod:`.commands`), their completion records and
the report (:mod:`.records`), and the run (:mod:`.run`)."""
