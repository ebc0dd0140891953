"""Analysis jobs behind one seam (``JobEngine``): the in-process engine (``local``, the embedded
default) and Temporal workflows run by ``video worker`` processes (``temporal``, for scale-out)."""

from video.jobs.engine import JobEngine, JobSettings, progress
from video.jobs.events import EventHub
from video.jobs.local import LocalEngine
from video.jobs.summaries import Summariser

__all__ = ["EventHub", "JobEngine", "JobSettings", "LocalEngine", "Summariser", "progress"]
