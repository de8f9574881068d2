"""The backends of the realtime stores: ``base`` (the protocols), ``memory``, ``redis``."""
