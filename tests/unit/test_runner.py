"""A stop always ends: leftover tasks get a bounded grace after their cancellation."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from nfvha.runner import run_bounded


def run_in_thread(main, grace: float = 0.2) -> list[BaseException]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_bounded(main, grace)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "run_bounded did not return"
    return errors


def test_a_task_that_outlives_its_cancellation_does_not_keep_a_stop_waiting(caplog: pytest.LogCaptureFixture):
    async def stubborn() -> None:
        while True:  # like a library's close awaiting a worker thread that has already ended
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                continue

    async def main() -> None:
        asyncio.get_running_loop().create_task(stubborn())
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, "nfvha"):
        assert run_in_thread(main()) == []
    assert "left behind at exit" in caplog.text and "stubborn" in caplog.text


def test_leftover_tasks_are_cancelled_and_their_clean_up_runs():
    cleaned = []

    async def worker() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)
            cleaned.append(True)

    async def main() -> None:
        asyncio.get_running_loop().create_task(worker())
        await asyncio.sleep(0)

    assert run_in_thread(main()) == [] and cleaned == [True]


def test_the_main_coroutines_error_is_raised():
    async def main() -> None:
        raise OSError("address in use")

    [error] = run_in_thread(main())
    assert isinstance(error, OSError) and "address in use" in str(error)
