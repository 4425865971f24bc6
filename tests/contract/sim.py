"""Starts `runwarden sim` (the binary under test) once for the suite and stops it afterwards.

The Rust test tests/contract.rs passes RUNWARDEN_BIN (the binary cargo built) and RUNWARDEN_WORLD;
run alone, point them at a build: RUNWARDEN_BIN=target/debug/runwarden python -m unittest ...
"""

import json
import os
import signal
import subprocess
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Sim:
    def __init__(self):
        binary = os.environ.get("RUNWARDEN_BIN", os.path.join(ROOT, "target", "debug", "runwarden"))
        world = os.environ.get("RUNWARDEN_WORLD", os.path.join(ROOT, "deploy", "local", "world.yaml"))
        self.proc = subprocess.Popen(
            [binary, "sim", "--world", world, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.env = {}
        while len(self.env) < 4:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{binary} sim exited before printing its export lines")
            if line.startswith("export "):
                k, v = line[len("export "):].strip().split("=", 1)
                self.env[k] = v
        self.endpoint = self.env["RUNWARDEN_ENDPOINT"]
        self.hostport = self.endpoint.split("://", 1)[1]

    def admin(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.endpoint + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read() or b"null")

    def faults(self, spec):
        """Replaces the injected faults (`/sim/faults`, the world file's `faults` section)."""
        return self.admin("PUT", "/sim/faults", spec)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


_SIM = None


def sim():
    global _SIM
    if _SIM is None:
        _SIM = Sim()
    return _SIM


def stop():
    if _SIM is not None:
        _SIM.stop()
