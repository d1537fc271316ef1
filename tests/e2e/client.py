#!/usr/bin/env python3
"""Clients for the end-to-end test, run against 127.0.0.1:7878.

  client.py once TEXT          send one line, check the reply, print it
  client.py loop SECONDS FILE [PROGRESS]
                               new connection after new connection until
                               SECONDS pass or FILE exists; every reply is
                               checked; prints the counts and fails on any
                               refused connection, reset or wrong reply.
                               Each failure is reported on stderr with the
                               client port of its connection ("port P:", or
                               "no connection:" if connect failed), so a
                               test can tell which ones a crashed server
                               held. With PROGRESS, appends one byte to it
                               per connection served: its size is the count
                               so far, for a test to wait on
  client.py hold IN OUT        connect, exchange a line, write OUT, wait for
                               IN to exist, exchange another line on the
                               same connection
"""
import os
import socket
import sys
import time

ADDR = ("127.0.0.1", 7878)


def exchange(sock, text):
    line = (text + "\n").encode()
    sock.sendall(line)
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the reply")
        reply += chunk
    if reply != line.upper():
        raise AssertionError(f"sent {line!r}, got {reply!r}")
    return reply.decode().rstrip("\n")


def connect():
    sock = socket.create_connection(ADDR, timeout=30)
    sock.settimeout(30)
    return sock


def once(text):
    with connect() as sock:
        print(exchange(sock, text))


def loop(seconds, stop_file, progress_file=None):
    deadline = time.monotonic() + float(seconds)
    progress = None
    if progress_file:
        progress = os.open(progress_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    ok = failed = 0
    n = 0
    while time.monotonic() < deadline and not os.path.exists(stop_file):
        n += 1
        where = "no connection"
        try:
            with connect() as sock:
                where = f"port {sock.getsockname()[1]}"
                exchange(sock, f"loop request {n}")
            ok += 1
            if progress is not None:
                os.write(progress, b".")
        except Exception as e:  # refused, reset, timeout, wrong reply
            failed += 1
            print(f"{where}: request {n}: {e!r}", file=sys.stderr, flush=True)
    print(f"loop: {ok} served, {failed} failed")
    sys.exit(1 if failed or not ok else 0)


def hold(wait_for, ready_file):
    with connect() as sock:
        exchange(sock, "held before")
        open(ready_file, "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(wait_for):
            if time.monotonic() > deadline:
                sys.exit("hold: gave up waiting")
            time.sleep(0.05)
        print(exchange(sock, "held after"))


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"once": once, "loop": loop, "hold": hold}[mode](*args)
