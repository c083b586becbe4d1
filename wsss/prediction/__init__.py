"""``wsss.predict`` as a library: images of any folder (:mod:`.images`) through a trained model (:mod:`.tool`)."""
