"""The tiny replica of the scale benchmark: one process, one socket, no imports beyond
`socket` and `os`, run as `python -S -I tiny.py` (no site, no user paths).

Why this and not the stdlib `http.server` app of bench/local (~15 MB RSS, a thread per
connection): 1,000 of these must fit next to everything else on the machine. Measured on
Python 3.11: about 10 MB RSS but only ~4 MB PSS each (the interpreter's text is shared), so
1,000 replicas cost ~4 GB. It answers every request with 200 and closes the connection, so
a probe costs the replica one accept and one recv/send, and the daemon's figures are not
inflated by a slow server. busybox httpd would be lighter (~0.2 MB) but forks a child per
connection (1,000 forks/s of probes) and is not installed by default; a compiled C server
would need a compiler on every machine that runs the benchmark.
"""
import os
import socket

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(os.environ["PORT"])))
srv.listen(128)
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
while True:
    conn, _ = srv.accept()
    try:
        conn.settimeout(2.0)
        conn.recv(4096)
        conn.sendall(ANSWER)
    except OSError:
        pass
    conn.close()
