"""Several bastions as one: shared state, revocation everywhere, dead nodes, shared recordings."""
