"""Build: the per-request modules are compiled with mypyc (about half the Python time of a
proxied request). PILOTFISH_PURE_PYTHON=1 skips compilation; everything then runs as plain
Python, with the same behaviour."""

import os

from setuptools import setup

# The request path. Compiled modules must stay mypyc-compatible (see docs/development.md).
COMPILED = [
    "src/pilotfish/codec/events.py",
    "src/pilotfish/codec/flow_control.py",
    "src/pilotfish/codec/h1_h2.py",
    "src/pilotfish/codec/http1.py",
    "src/pilotfish/codec/http2.py",
    "src/pilotfish/http/headers.py",
    "src/pilotfish/http/conn_manager.py",
    "src/pilotfish/http/hash_policy.py",
    "src/pilotfish/http/router.py",
    "src/pilotfish/router/matcher.py",
    "src/pilotfish/stats/store.py",
    "src/pilotfish/stream_info.py",
    "src/pilotfish/upstream/conn_pool.py",
    "src/pilotfish/upstream/hash_lb.py",
    "src/pilotfish/upstream/hashes.py",
    "src/pilotfish/upstream/host.py",
    "src/pilotfish/upstream/lb.py",
    "src/pilotfish/upstream/maglev.py",
    "src/pilotfish/upstream/ring_hash.py",
]

ext_modules = []
if os.environ.get("PILOTFISH_PURE_PYTHON") != "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3", debug_level="1")

setup(ext_modules=ext_modules)
