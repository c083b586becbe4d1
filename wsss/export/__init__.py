"""Writers of the formats other tools take (the PASCAL VOC evaluation server's archive)."""
