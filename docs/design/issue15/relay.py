import ctypes, os, socket, threading
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
def socket_in_netns(name, *args):
    """A socket created inside /run/netns/<name>; the calling thread returns to its own netns."""
    out = {}
    def work():
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            assert libc.setns(target, CLONE_NEWNET) == 0, ctypes.get_errno()
            out["s"] = socket.socket(*args)
        finally:
            libc.setns(own, CLONE_NEWNET); os.close(own); os.close(target)
    t = threading.Thread(target=work); t.start(); t.join()
    return out["s"]

def relay(name, port, target=("127.0.0.1", None)):
    """127.0.0.1:port inside netns `name` -> 127.0.0.1:target_port here."""
    ls = socket_in_netns(name)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port)); ls.listen(64)
    def pump(a, b):
        try:
            while (d := a.recv(65536)):
                b.sendall(d)
        except OSError:
            pass
        finally:
            try: b.shutdown(socket.SHUT_WR)
            except OSError: pass
    def accept():
        while True:
            c, _ = ls.accept()
            u = socket.create_connection(target)
            threading.Thread(target=pump, args=(c, u), daemon=True).start()
            threading.Thread(target=pump, args=(u, c), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()

if __name__ == "__main__":
    import subprocess, time
    # a host-ns loopback server
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("127.0.0.1", 18555)); srv.listen()
    def echo():
        c, _ = srv.accept(); c.sendall(b"from host ns: " + c.recv(100)); c.close()
    threading.Thread(target=echo, daemon=True).start()
    relay("imptnode", 18555, ("127.0.0.1", 18555))
    print(subprocess.run(["nsenter", "--net=/run/netns/imptnode", "python3", "-c",
        "import socket;s=socket.create_connection(('127.0.0.1',18555));s.sendall(b'hello');print(s.recv(100))"],
        capture_output=True, text=True).stdout)
