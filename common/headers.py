"""Request headers the video service sends and the gateway reads."""

# A client's session key: the gateway's engine-aware routing keeps a session on one vLLM pod.
SESSION_HEADER = "x-session-id"
