#!/usr/bin/env python3
"""Clients for the end-to-end test, run against 127.0.0.1:7878, or the
address in E2E_ADDR (HOST:PORT). With E2E_SOURCES (space-separated local
addresses, such as 127.0.0.2 127.0.0.3), successive connections come from
each in turn, as clients on as many hosts would (behind a balancer, the
server must name them, not the balancer).

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
  client.py busy N FILE PROGRESS
                               hold N established connections, each sending
                               a numbered request every 10 ms and checking
                               each reply, until FILE exists (120 s at
                               most); appends one byte to PROGRESS per 100
                               replies; prints the replies verified, the
                               connections dropped and the longest wait for
                               a reply; fails on any error
  client.py faults N FILE PROGRESS
                               as busy, but a connection may end: hold N
                               connections, each sending a numbered
                               request every 10 ms (one at a time) and
                               checking each reply, until FILE exists
                               (300 s at most); then prints one figure
                               line: carried (open and served: its request
                               answered within 1.5 s), closed (EOF or
                               reset), duplicated (a reply to a request
                               already answered), hung (open, its request
                               unanswered for 1.5 s), wrong (any other
                               unexpected reply), and the longest wait for
                               a reply a carried connection saw
  client.py idle SECONDS OUT   connect, exchange a line, write OUT, then
                               wait for the server to close the connection;
                               fails unless EOF comes within SECONDS of the
                               exchange
  client.py resp-hold IN OUT   against a Redis-protocol server: connect, run
                               SELECT 5 and CLIENT SETNAME e2e, write OUT,
                               wait for IN to exist, then on the same
                               connection SET k five and CLIENT GETNAME,
                               which must answer e2e

  client.py --tls CAFILE MODE ...
                               the same over TLS (Python's ssl, that is
                               OpenSSL), the server's certificate verified
                               against CAFILE and the address's host (an IP
                               address in its subjectAltName). In busy, loop
                               and once, connections alternate TLS 1.3 and
                               TLS 1.2 (even and odd), and busy's figure line
                               counts them; any SSL error fails the client
"""
import selectors
import os
import socket
import ssl
import sys
import time

ADDR = ("127.0.0.1", 7878)
if os.environ.get("E2E_ADDR"):
    _host, _port = os.environ["E2E_ADDR"].rsplit(":", 1)
    ADDR = (_host, int(_port))
SOURCES = os.environ.get("E2E_SOURCES", "").split()
_connections = 0
# With --tls CAFILE: [context for TLS 1.3, context for TLS 1.2].
TLS = None


def tls_contexts(cafile):
    contexts = []
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.minimum_version = ctx.maximum_version = version
        contexts.append(ctx)
    return contexts


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
    global _connections
    source = None
    if SOURCES:
        source = (SOURCES[_connections % len(SOURCES)], 0)
        _connections += 1
    sock = socket.create_connection(ADDR, timeout=30, source_address=source)
    sock.settimeout(30)
    if TLS:
        # Even connections TLS 1.3, odd ones TLS 1.2; the handshake is
        # done here (blocking), before the caller's first byte.
        ctx = TLS[_tls_count() % 2]
        sock = ctx.wrap_socket(sock, server_hostname=ADDR[0])
    return sock


_tls_made = 0


def _tls_count():
    global _tls_made
    _tls_made += 1
    return _tls_made - 1


def versions(socks):
    """'TLSv1.3 x100, TLSv1.2 x100' for the TLS sockets among `socks`."""
    seen = {}
    for sock in socks:
        if isinstance(sock, ssl.SSLSocket):
            seen[sock.version()] = seen.get(sock.version(), 0) + 1
    return ", ".join(f"{v} x{n}" for v, n in sorted(seen.items(), reverse=True))


def recv_ready(sock):
    """What a non-blocking socket the selector reported readable holds: its
    bytes, b"" at EOF, or None when a TLS record is not complete yet. Data
    OpenSSL has already decrypted and buffered is read too (the selector
    cannot see it)."""
    try:
        data = sock.recv(65536)
    except ssl.SSLWantReadError:
        return None
    if data and isinstance(sock, ssl.SSLSocket):
        while sock.pending():
            data += sock.recv(65536)
    return data


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


def signal_then_wait(ready_file, wait_for, who):
    """Tells the test a connection is ready (creates `ready_file`), then
    waits up to 60 s for the test's go (`wait_for` exists)."""
    open(ready_file, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(wait_for):
        if time.monotonic() > deadline:
            sys.exit(f"{who}: gave up waiting")
        time.sleep(0.05)


def hold(wait_for, ready_file):
    with connect() as sock:
        exchange(sock, "held before")
        signal_then_wait(ready_file, wait_for, "hold")
        print(exchange(sock, "held after"))


def resp_exchange(sock, commands, want):
    """Sends RESP commands (each a list of words) and checks that the
    replies are exactly `want`."""
    out = b""
    for words in commands:
        out += b"*%d\r\n" % len(words)
        for word in words:
            out += b"$%d\r\n%s\r\n" % (len(word), word.encode())
    sock.sendall(out)
    got = b""
    while len(got) < len(want):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {got!r}, expecting {want!r}")
        got += chunk
    if got != want:
        raise AssertionError(f"expected {want!r}, got {got!r}")


def resp_hold(wait_for, ready_file):
    with connect() as sock:
        resp_exchange(sock, [["SELECT", "5"], ["CLIENT", "SETNAME", "e2e"]], b"+OK\r\n+OK\r\n")
        signal_then_wait(ready_file, wait_for, "resp-hold")
        resp_exchange(sock, [["SET", "k", "five"], ["CLIENT", "GETNAME"]], b"+OK\r\n$3\r\ne2e\r\n")
        print("resp-hold: the same connection, its database and its name kept")


def busy(count, stop_file, progress_file):
    count = int(count)
    progress = os.open(progress_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(count):
        sock = connect()
        sock.setblocking(False)
        # [socket, next request number, when it was sent (None: not yet), bytes received]
        conn = [sock, 0, None, b""]
        conns.append(conn)
        sel.register(sock, selectors.EVENT_READ, conn)
    verified = longest = 0
    deadline = time.monotonic() + 120
    next_send = time.monotonic()
    while not os.path.exists(stop_file):
        now = time.monotonic()
        if now > deadline:
            sys.exit("busy: ran out of time")
        if now >= next_send:
            for conn in conns:
                if conn[2] is None:
                    conn[0].sendall(f"busy {conns.index(conn)} request {conn[1]}\n".encode())
                    conn[2] = now
            next_send = now + 0.01
        for key, _ in sel.select(timeout=max(0.0, next_send - time.monotonic())):
            conn = key.data
            chunk = recv_ready(conn[0])
            if chunk is None:
                continue
            if not chunk:
                sys.exit(f"busy: connection {conns.index(conn)} dropped after {verified} replies")
            conn[3] += chunk
            while b"\n" in conn[3]:
                line, conn[3] = conn[3].split(b"\n", 1)
                want = f"BUSY {conns.index(conn)} REQUEST {conn[1]}".encode()
                if line != want or conn[2] is None:
                    sys.exit(f"busy: expected {want!r}, got {line!r}")
                longest = max(longest, time.monotonic() - conn[2])
                conn[1] += 1
                conn[2] = None
                verified += 1
                if verified % 100 == 0:
                    os.write(progress, b".")
    kinds = versions(conn[0] for conn in conns)
    for conn in conns:
        conn[0].close()
    kinds = f" ({kinds})" if kinds else ""
    print(f"busy: {count} connections{kinds}, {verified} replies verified, 0 dropped, longest wait {longest:.3f} s")


def faults(count, stop_file, progress_file):
    """Busy connections through a fault: each ends carried, closed,
    duplicated, hung or wrong (see the module's doc)."""
    count = int(count)
    hung_after = 1.5
    progress = os.open(progress_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(count):
        sock = connect()
        sock.setblocking(False)
        conn = {"i": i, "sock": sock, "n": 0, "sent": None, "buf": b"", "end": None, "longest": 0.0}
        conns.append(conn)
        sel.register(sock, selectors.EVENT_READ, conn)

    def end(conn, how):
        conn["end"] = how
        sel.unregister(conn["sock"])
        conn["sock"].close()

    verified = 0
    deadline = time.monotonic() + 300
    next_send = time.monotonic()
    while not os.path.exists(stop_file):
        now = time.monotonic()
        if now > deadline:
            sys.exit("faults: ran out of time")
        if now >= next_send:
            for conn in conns:
                if conn["end"] is None and conn["sent"] is None:
                    try:
                        conn["sock"].sendall(f"busy {conn['i']} request {conn['n']}\n".encode())
                        conn["sent"] = now
                    except OSError:
                        end(conn, "closed")
            next_send = now + 0.01
        for key, _ in sel.select(timeout=max(0.0, next_send - time.monotonic())):
            conn = key.data
            if conn["end"] is not None:
                continue
            try:
                chunk = conn["sock"].recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                end(conn, "closed")
                continue
            conn["buf"] += chunk
            while conn["end"] is None and b"\n" in conn["buf"]:
                line, conn["buf"] = conn["buf"].split(b"\n", 1)
                want = f"BUSY {conn['i']} REQUEST {conn['n']}".encode()
                if line == want and conn["sent"] is not None:
                    conn["longest"] = max(conn["longest"], time.monotonic() - conn["sent"])
                    conn["n"] += 1
                    conn["sent"] = None
                    verified += 1
                    if verified % 100 == 0:
                        os.write(progress, b".")
                    continue
                earlier = [f"BUSY {conn['i']} REQUEST {k}".encode() for k in range(conn["n"])]
                end(conn, "duplicated" if line in earlier else "wrong")
                print(f"faults: connection {conn['i']}: expected {want!r}, got {line!r}", file=sys.stderr)
    now = time.monotonic()
    for conn in conns:
        if conn["end"] is None:
            waiting = conn["sent"] is not None and now - conn["sent"] > hung_after
            conn["end"] = "hung" if waiting else "carried"
            conn["sock"].close()
    figures = {how: sum(1 for c in conns if c["end"] == how) for how in ("carried", "closed", "duplicated", "hung", "wrong")}
    longest = max((c["longest"] for c in conns if c["end"] == "carried"), default=0.0)
    print(" ".join(f"{how}={n}" for how, n in figures.items()) + f" replies={verified} longest={longest:.3f}s")


def idle(seconds, ready_file):
    with connect() as sock:
        exchange(sock, "idle soon")
        exchanged = time.monotonic()
        open(ready_file, "w").close()
        sock.settimeout(float(seconds) + 5)
        rest = sock.recv(4096)
        took = time.monotonic() - exchanged
        if rest:
            sys.exit(f"idle: got {rest!r} instead of EOF")
        if took > float(seconds):
            sys.exit(f"idle: EOF {took:.2f} s after the exchange, more than {seconds} s")
        print(f"idle: EOF {took:.2f} s after the last exchange")


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--tls"]:
        TLS = tls_contexts(argv[1])
        argv = argv[2:]
    mode, *args = argv
    modes = {"once": once, "loop": loop, "hold": hold, "busy": busy, "faults": faults, "idle": idle, "resp-hold": resp_hold}
    modes[mode](*args)
