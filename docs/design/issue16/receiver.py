"""Prototype (not run by the tests): the local HTTP receiver the alarm tests would use.
python3 receiver.py PORT  -> records every POST (path, headers, body) and answers like the
services: Pushover {"status":1}, Pushbullet {"type":"note"...}, Slack "ok"."""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

got = []

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        got.append((self.path, dict(self.headers), body))
        if self.path.startswith("/1/messages.json"):
            out, ctype = b'{"status":1,"request":"test"}', "application/json"
        elif self.path.startswith("/v2/pushes"):
            out, ctype = body, "application/json"
        else:
            out, ctype = b"ok", "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass

def serve(port):
    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv

if __name__ == "__main__":
    import time
    serve(int(sys.argv[1]))
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 5)
    for p, h, b in got:
        print(p, h.get("Content-Type"), h.get("Access-Token"), b.decode())
