"""bastion-tui: the auditor's terminal app (sessions, replay, SQL, requests, audit, integrity).

It reaches the bastion only over SSH (the control plane's `--json` commands) or reads a state
store and recordings directory directly for offline work; recordings are always decrypted here,
with the auditor's own key.
"""
