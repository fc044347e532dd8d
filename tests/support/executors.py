"""An executor that counts the work handed to it."""

from concurrent.futures import Executor, Future, ThreadPoolExecutor


class CountingExecutor(Executor):
    """A thread pool that counts the pieces handed to it."""

    def __init__(self, workers: int = 3):
        self.pool = ThreadPoolExecutor(workers)
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.submitted += 1
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, **kw) -> None:
        self.pool.shutdown(wait, **kw)


def piece_threads() -> int:
    """Threads of this process that decode pieces of a file (run in a decoding worker)."""
    import threading

    return sum(t.name.startswith("piece") for t in threading.enumerate())
