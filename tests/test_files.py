"""lab.files.file_lock: the one inter-process lock of report folders, study folders and the capture cache."""

import multiprocessing
import time

import pytest

from lab.files import file_lock


def test_a_second_holder_is_refused_with_the_message_given(tmp_path):
    path = tmp_path / "out" / ".lock"
    with file_lock(path, wait=False, busy="folder out is busy"):
        assert path.exists()
        with pytest.raises(ValueError, match="^folder out is busy$"):
            with file_lock(path, wait=False, busy="folder out is busy"):
                pass
    with file_lock(path, wait=False):  # released at the end of the block
        pass


def _hold(path, held, seconds):
    with file_lock(path):
        held.set()
        time.sleep(seconds)


def test_a_lock_held_by_another_process_is_refused_and_waited_for(tmp_path):
    path = tmp_path / ".lock"
    context = multiprocessing.get_context("fork")
    held = context.Event()
    holder = context.Process(target=_hold, args=(path, held, 1.0))
    holder.start()
    try:
        assert held.wait(30)
        start = time.perf_counter()
        with pytest.raises(ValueError, match="locked by another process"):
            with file_lock(path, wait=False):
                pass
        with file_lock(path):  # waits for the holder's block to end
            waited = time.perf_counter() - start
        assert waited > 0.3
    finally:
        holder.join(30)


def test_an_unusable_folder_is_an_error_unless_the_lock_is_optional(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        with file_lock(blocker / ".lock"):
            pass
    ran = []
    with file_lock(blocker / ".lock", optional=True):
        ran.append(True)
    assert ran == [True]
