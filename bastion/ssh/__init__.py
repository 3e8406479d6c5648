"""The SSH edge: the front door, sign-in, process dispatch, the shell relay, upstream connections,
forwarded channels and the file-transfer refusal. The session lifecycle itself is
`bastion.sessions`; this package is its SSH side."""
