"""The rounds' progress in the Prefect UI: a progress artifact on the run."""

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from alcore.config import ExperimentConfig
from tasks.report import artifact_key


class Progress:
    """The rounds' progress artifact, updated at most once a second. The updates go
    from a thread of their own, in order: a blocking API call each, which the rounds
    need not wait for (about 50 ms each while the server is busy, measured)."""

    def __init__(self, config: ExperimentConfig, *, done: int = 0):
        self.total = config.rounds
        self.last = time.monotonic()
        self.id = create_progress_artifact(
            progress=100.0 * done / self.total if self.total else 100.0,
            key=artifact_key(config, "progress"),
            description="Active-learning rounds finished",
        )
        self.sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bal-progress")
        self.context = contextvars.copy_context()

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= 1.0:
            progress = 100.0 * done / self.total if self.total else 100.0
            sent = self.sender.submit(self.context.copy().run, update_progress_artifact, self.id, progress=progress)
            self.last = now
            if final:
                sent.result()  # the last one is in before the run ends
                self.sender.shutdown()
