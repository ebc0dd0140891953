"""Generated footage descriptions: an hour (or four) of a kitchen at one frame a second, where
every description repeats the scene's words and five rare events happen once each.

The questions share the scene's common words and each event's rare ones, as users ask them.
No model is needed: this is what a vision model's descriptions of such footage look like.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from video.store import FrameRecord, Summary

SCENE = [
    "The kitchen is bright; a person stands at the counter in the kitchen chopping vegetables on the table.",
    "In the kitchen a person washes a pan with water at the sink; the kitchen floor is clean.",
    "There is a person in the kitchen stirring a pot on the stove; the kitchen door is closed.",
    "A person walks across the kitchen floor to the table; when they open the fridge there is light.",
    "The kitchen table holds plates and a jug of water; a person wipes the table in the kitchen.",
    "A person in an apron stands by the kitchen window; there is a kettle on the stove in the kitchen.",
    "In the kitchen the person pours water from the kettle into a cup by the kitchen door.",
    "The kitchen is quiet; a person sweeps the kitchen floor near the table and the door.",
]
SUMMARY = "A person cooks, cleans and moves about the kitchen between the stove, sink, table and door."


@dataclass(frozen=True)
class Event:
    description: str
    question: str


EVENTS = [
    Event("A red bicycle leans against the refrigerator in the kitchen.", "When is there a bicycle in the kitchen?"),
    Event("A black cat jumps onto the kitchen table.", "When does a cat jump onto the table in the kitchen?"),
    Event("Smoke rises from a frying pan and the smoke alarm flashes.", "When is there smoke in the kitchen?"),
    Event("A courier in a yellow jacket hands over a parcel at the door.", "When is a parcel delivered at the door?"),
    Event("Water floods the kitchen floor from a burst pipe under the sink.", "When is the kitchen floor flooded?"),
]
EVENT_FRAMES = 3  # each event is seen in this many consecutive frames


@dataclass(frozen=True)
class Footage:
    frames: list[FrameRecord]
    summaries: list[Summary]
    events: dict[int, list[int]]  # event number -> the frame indices that show it

    @property
    def duration_s(self) -> float:
        return float(len(self.frames))


def footage(hours: float, batch_size: int = 20, seed: int = 7) -> Footage:
    """``hours`` of descriptions at 1 frame/s, the batch summaries, and where each event is."""
    rng = random.Random(seed)
    count = int(hours * 3600)
    starts = sorted(rng.sample(range(60, count - 60, 97), len(EVENTS)))
    rng.shuffle(starts)
    texts = [SCENE[rng.randrange(len(SCENE))] for _ in range(count)]
    events: dict[int, list[int]] = {}
    for number, (event, start) in enumerate(zip(EVENTS, starts, strict=True)):
        events[number] = list(range(start, start + EVENT_FRAMES))
        for index in events[number]:
            texts[index] = f"{SCENE[index % len(SCENE)]} {event.description}"
    frames = [FrameRecord(i, float(i), text, None) for i, text in enumerate(texts)]
    summaries = [
        Summary(b, float(b * batch_size), float(min(count, (b + 1) * batch_size) - 1), batch_size, SUMMARY)
        for b in range((count + batch_size - 1) // batch_size)
    ]
    return Footage(frames, summaries, events)
