#!/usr/bin/env python3
"""A TLS client for the tests, on Python's ssl module (OpenSSL): a pipe
between stdin/stdout and a TLS connection to 127.0.0.1:PORT.

What stdin gives is sent as it arrives (each read one TLS write), or, with
--batch, read whole first and sent in one write; the plaintext received
goes to stdout. At stdin's EOF the client sends close_notify and reads on
until the server closes. On stderr, JSON lines: one when the handshake is
done ({"version", "cipher", "cert_sha256", "subject"}), one when the
server closed ({"closed": "close_notify"} or, without one, "eof"), or one
with {"error"} (exit status 3) when the handshake or the connection fails.
Every wait has a deadline (--timeout seconds, exit status 4).
"""

import argparse
import hashlib
import json
import os
import select
import socket
import ssl
import sys
import time


def report(**fields):
    print(json.dumps(fields), file=sys.stderr, flush=True)


def fail(error):
    report(error=error)
    sys.exit(3)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--ca", required=True, help="CA file the server must chain to")
    p.add_argument("--cert", help="client certificate (mutual TLS)")
    p.add_argument("--key", help="its key")
    p.add_argument("--version", choices=["1.2", "1.3"])
    p.add_argument("--ciphers", help="OpenSSL cipher list (TLS 1.2)")
    p.add_argument("--proxy", help="hex bytes sent in clear before the handshake")
    p.add_argument("--batch", action="store_true", help="read stdin whole, send it in one write")
    p.add_argument("--timeout", type=float, default=20.0)
    a = p.parse_args()
    deadline = time.monotonic() + a.timeout

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(a.ca)
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    if a.version:
        v = ssl.TLSVersion.TLSv1_2 if a.version == "1.2" else ssl.TLSVersion.TLSv1_3
        ctx.minimum_version = ctx.maximum_version = v
    if a.ciphers:
        ctx.set_ciphers(a.ciphers)
    batch = sys.stdin.buffer.read() if a.batch else None

    try:
        sock = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if a.proxy:
            sock.sendall(bytes.fromhex(a.proxy))
    except OSError as e:
        fail(f"connect: {e}")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")

    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                if not data:
                    fail("the server closed during the handshake")
                incoming.write(data)
        sock.sendall(outgoing.read())
    except (ssl.SSLError, OSError) as e:
        fail(f"handshake: {e}")
    der = tls.getpeercert(binary_form=True)
    subject = ",".join(
        f"{k}={v}" for rdn in tls.getpeercert().get("subject", ()) for (k, v) in rdn
    )
    report(
        version=tls.version(),
        cipher=tls.cipher()[0],
        cert_sha256=hashlib.sha256(der).hexdigest(),
        subject=subject,
    )

    sock.setblocking(False)
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer.fileno()
    stdin_open = batch is None
    pending = bytearray()

    def send(plaintext):
        tls.write(plaintext)
        pending.extend(outgoing.read())

    def close_notify():
        try:
            tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        pending.extend(outgoing.read())

    if batch is not None:
        if batch:
            send(batch)
        close_notify()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                report(error="timeout")
                sys.exit(4)
            readable = [sock] + ([stdin] if stdin_open else [])
            r, w, _ = select.select(readable, [sock] if pending else [], [], left)
            if sock in w:
                try:
                    del pending[: sock.send(pending)]
                except BlockingIOError:
                    pass
            if stdin in r:
                chunk = os.read(stdin, 1 << 20)
                if chunk:
                    send(chunk)
                else:
                    stdin_open = False
                    close_notify()
            if sock in r:
                try:
                    data = sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                if data:
                    incoming.write(data)
                else:
                    incoming.write_eof()
                while True:
                    try:
                        plain = tls.read(1 << 16)
                    except ssl.SSLWantReadError:
                        break
                    except ssl.SSLZeroReturnError:
                        report(closed="close_notify")
                        return
                    except ssl.SSLEOFError:
                        # A truncation attack looks the same; the tests judge.
                        report(closed="eof")
                        return
                    if not plain:
                        report(closed="close_notify")
                        return
                    out.write(plain)
                    out.flush()
                if not data:
                    report(closed="eof")
                    return
    except ssl.SSLError as e:
        fail(str(e))
    except OSError as e:
        fail(f"connection: {e}")


if __name__ == "__main__":
    main()
