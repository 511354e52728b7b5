"""TCP/UDP probes for the network tests (run inside a netns with nsenter).
Every wait is bounded.

    nettool.py srv HOST PORT        TCP + UDP echo until killed
    nettool.py tcp HOST PORT [S [DEV]]  connect, send, print "tcp ok" or "tcp FAIL <why>"
    nettool.py udp HOST PORT [S [DEV]]  one datagram, print "udp ok" or "udp FAIL <why>"
    nettool.py watch HOST PORT      a prober started once (the bench's link figure): for
                                    each "up" line on stdin, try a TCP echo every 1 ms until
                                    one works; each "down", until a connect fails; print
                                    "up|down <time.monotonic()>" or "timeout" (10 s)

DEV: the probe's socket is bound to that interface first (SO_BINDTODEVICE,
which an unprivileged process may do since Linux 5.7): `uwsgi0` sends even
to 127.0.0.1 out of a container's uwsgi0, towards the node.
"""
import socket
import sys
import threading
import time


def serve(host, port):
    def udp():
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((host, port))
        while True:
            d, a = u.recvfrom(2048)
            u.sendto(d, a)

    def echo(c):
        with c:
            try:
                while (d := c.recv(2048)):
                    c.sendall(d)
            except OSError:
                pass  # reset by the peer, or cut by an unlink

    threading.Thread(target=udp, daemon=True).start()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)
    print("listening", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()


def echo_ok(host, port):
    """A short connect timeout: a SYN dropped while nothing is linked (the
    kernel rate-limits the rejects' ICMP to one a second) must not stall
    the next try; a connected peer then gets 1 s to echo."""
    try:
        with socket.create_connection((host, port), timeout=0.005) as s:
            s.settimeout(1)
            s.sendall(b"hi")
            return s.recv(10) == b"hi"
    except OSError:
        return False


def watch(host, port):
    """No new process per try: the figure is the kernel's, not nsenter's."""
    for line in sys.stdin:
        want = line.strip() == "up"
        end = time.monotonic() + 10
        while echo_ok(host, port) != want and time.monotonic() < end:
            time.sleep(0.001)
        now = time.monotonic()
        print(f"{line.strip()} {now:.6f}" if now < end else "timeout", flush=True)


def client(kind, dev, timeout):
    s = socket.socket(socket.AF_INET, kind)
    s.settimeout(timeout)
    if dev:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    return s


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 1.5
    dev = sys.argv[5] if len(sys.argv) > 5 else None
    if mode == "srv":
        serve(host, port)
    elif mode == "watch":
        watch(host, port)
    elif mode == "tcp":
        try:
            with client(socket.SOCK_STREAM, dev, timeout) as s:
                s.connect((host, port))
                s.sendall(b"hi")
                print("tcp ok" if s.recv(10) == b"hi" else "tcp FAIL wrong echo")
        except OSError as e:
            print("tcp FAIL", e)
    elif mode == "udp":
        try:
            u = client(socket.SOCK_DGRAM, dev, timeout)
            u.sendto(b"hi", (host, port))
            print("udp ok" if u.recvfrom(10)[0] == b"hi" else "udp FAIL wrong echo")
        except OSError as e:
            print("udp FAIL", e)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
