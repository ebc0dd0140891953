"""What the gateway and the video service share: the error envelope, bearer keys, JSON logs."""
