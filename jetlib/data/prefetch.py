"""The loader's background thread: run a generator a few items ahead of its consumer, and never
leave the thread behind (a break, an exception in the consumer or garbage collection stops it)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

PREFETCH_THREAD = "jetlib-prefetch"  # the background reader's thread name
_PUT_TIMEOUT_S = 0.1  # how often a blocked producer checks whether the consumer has gone
_JOIN_TIMEOUT_S = 300.0  # a piece read in flight (an S3 fetch) is allowed to finish


def _offer(out: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room until ``stop`` is set; True if it was put."""
    while not stop.is_set():
        try:
            out.put(item, timeout=_PUT_TIMEOUT_S)
            return True
        except queue.Full:
            continue
    return False


def _take(q: queue.Queue, worker: threading.Thread):
    """The next item from the prefetch thread; an error, not a hang, if the thread died without a word."""
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            if not worker.is_alive() and q.empty():
                raise RuntimeError("the loader's prefetch thread ended without finishing the epoch") from None


def _produce(items: Iterator, out: queue.Queue, stop: threading.Event) -> None:
    """The prefetch thread: ``items``, then ``None`` (the end) or the exception that stopped it.

    Every ``put`` gives up once ``stop`` is set, the last ones included: a consumer that
    stops early leaves a full queue, and a plain ``put`` would block this thread forever.
    """
    try:
        for item in items:
            if stop.is_set() or not _offer(out, item, stop):
                return
    except BaseException as e:  # handed to the consumer, which re-raises it
        _offer(out, e, stop)
        return
    _offer(out, None, stop)


def in_background(items: Iterator, prefetch: int) -> Iterator:
    """Run the generator ``items`` on a prefetch thread, ``prefetch`` items ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    worker = threading.Thread(target=_produce, args=(items, q, stop), daemon=True, name=PREFETCH_THREAD)
    worker.start()
    try:
        while True:
            item = _take(q, worker)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # also on break, an exception in the consumer, or garbage collection (GeneratorExit)
        stop.set()
        worker.join(timeout=_JOIN_TIMEOUT_S)  # it notices within one put timeout or one piece read
