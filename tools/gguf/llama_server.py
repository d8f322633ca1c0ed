"""What the by-hand llama.cpp checks share: running a command, and a llama-server on 127.0.0.1 for
the length of a `with` block."""

import contextlib
import json
import subprocess
import sys
import time
import urllib.request

PORT = 18556


def run(*args):
    """Run a command; on failure, exit showing its output. Returns its stderr."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed:\n{r.stdout}{r.stderr}")
    return r.stderr


@contextlib.contextmanager
def llama_server(server, gguf, ctx):
    """llama-server on `gguf` (2 threads, `ctx` positions), up and healthy inside the block."""
    p = subprocess.Popen([server, "-m", gguf, "--host", "127.0.0.1", "--port", str(PORT), "-t", "2",
                          "-c", str(ctx)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2).status == 200:
                    break
            except OSError:
                if time.time() > deadline or p.poll() is not None:
                    sys.exit(f"llama-server did not start on {gguf}")
                time.sleep(0.2)
        yield
    finally:
        p.terminate()
        p.wait()


def post(path, body):
    """POST `body` as JSON to the running server's `path`; the JSON reply."""
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))
