"""The Temporal engine: one workflow per video (``workflows``), activities that decode and describe
segments, summarise and finish (``activities``), the worker process (``worker``) and the API's
side of the job seam (``engine``)."""
