"""bench/proxy/turn_order.py reads loop turns out of an `strace -yy` log."""
from __future__ import annotations

from bench.proxy.turn_order import turn_shapes

UP, CLIENT = "8001", "50000"


def _line(call: str, peer: str) -> str:
    return (f'7 {call}(9<TCP:[127.0.0.1:41000->127.0.0.1:{peer}]>, "x", 1) = 1')


def test_each_turn_between_epoll_waits_becomes_one_collapsed_pattern() -> None:
    log = "\n".join([
        "7 epoll_wait(3<anon_inode:[eventpoll]>, [...], 1024, -1) = 4",
        _line("recvfrom", UP), _line("recvfrom", UP), _line("read", CLIENT),
        _line("sendto", UP), _line("write", CLIENT), _line("write", CLIENT),
        "7 epoll_wait(3<anon_inode:[eventpoll]>, [...], 1024, -1) = 2",
        _line("read", UP), _line("write", CLIENT), _line("read", UP), _line("write", CLIENT),
        "7 epoll_pwait(3<anon_inode:[eventpoll]>, [...], 1024, -1, NULL, 8) = 1",
    ])
    assert turn_shapes(log, {UP}) == {"RrWw": 1, "RwRw": 1}


def test_lines_that_are_not_tcp_socket_calls_are_ignored() -> None:
    log = "\n".join([
        "7 epoll_wait(3<anon_inode:[eventpoll]>, [...], 1024, -1) = 1",
        '7 write(2</dev/pts/0>, "log", 3) = 3',
        _line("read", CLIENT),
        "7 epoll_wait(3<anon_inode:[eventpoll]>, [...], 1024, -1) = 1",
    ])
    assert turn_shapes(log, {UP}) == {"r": 1}
