import threading
from pathlib import Path

from carpool.node.threads import COMM_MAX, name_os_thread


def _named_in(name: str, given: str | None) -> str:
    seen: list[str] = []

    def run() -> None:
        name_os_thread(given)
        seen.append(Path("/proc/thread-self/comm").read_text().strip())

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(5)
    return seen[0]


def test_a_thread_takes_its_python_name_in_the_kernel():
    assert _named_in("carpool-heart", None) == "carpool-heart"


def test_a_long_name_is_cut_to_what_the_kernel_keeps_and_the_caller_is_untouched():
    before = Path("/proc/thread-self/comm").read_text()
    assert _named_in("x", "carpool-shared-1234") == "carpool-shared-1234"[:COMM_MAX]
    assert Path("/proc/thread-self/comm").read_text() == before
