"""packaging/Dockerfile (not built here: no Docker engine) checked as text: the proxyv2 base,
the binary pilot-agent starts, the same pinned dependencies as pyproject.toml and the same
build steps as `make install` (mypyc build included)."""

import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "packaging" / "Dockerfile"
WRAPPER = ROOT / "packaging" / "pilotfish.sh"
BINARY = "/usr/local/bin/pilotfish"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for req in requirements:
        name, sep, version = req.partition("==")
        assert sep, f"not pinned: {req}"
        pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def _pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` in RUN instructions."""
    installs = []
    for word, args in _instructions():
        if word != "RUN":
            continue
        command: list[str] = []
        for token in [*shlex.split(args), "&&"]:
            if token != "&&":
                command.append(token)
                continue
            if len(command) >= 3 and command[0].endswith("/pip") and command[1] == "install":
                installs.append(command[2:])
            command = []
    return installs


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_base_image_is_istio_proxyv2_from_an_arg() -> None:
    instructions = _instructions()
    args = dict(a.split("=", 1) for w, a in instructions if w == "ARG" and "=" in a)
    froms = [a.split()[0] for w, a in instructions if w == "FROM"]
    assert froms, "no FROM"
    assert "ISTIO_VERSION" in args
    assert args["PROXYV2_IMAGE"] == "docker.io/istio/proxyv2:${ISTIO_VERSION}"
    # Every stage (the build one too) is proxyv2, so the venv's interpreter matches.
    assert set(froms) == {"${PROXYV2_IMAGE}"}
    assert instructions[-1] == ("ENTRYPOINT", '["/usr/local/bin/pilot-agent"]')


def test_binary_path_is_the_wrapper_into_the_venv() -> None:
    copies = [a for w, a in _instructions() if w == "COPY"]
    assert f"packaging/pilotfish.sh {BINARY}" in copies
    wrapper = WRAPPER.read_text()
    assert wrapper.startswith("#!/bin/sh\n")
    assert 'exec /opt/pilotfish/bin/pilotfish "$@"' in wrapper
    assert WRAPPER.stat().st_mode & 0o111
    assert _pyproject()["project"]["scripts"]["pilotfish"] == "pilotfish.cli:main"
    # Every file the build copies from the repository exists.
    for args in copies:
        if args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source


def test_every_pinned_dependency_is_installed_at_its_pin() -> None:
    wanted = _pins(_pyproject()["project"]["dependencies"])
    installed: dict[str, str] = {}
    for argv in _pip_installs():
        installed.update(_pins([a for a in argv if "==" in a]))
    for name, version in wanted.items():
        assert installed.get(name) == version, f"{name}=={version} vs {installed.get(name)}"


def test_build_tools_and_mypyc_build_as_make_install() -> None:
    build_requires = _pins([r for r in _pyproject()["build-system"]["requires"] if "==" in r])
    makefile = (ROOT / "Makefile").read_text()
    make_tools = _pins(
        re.findall(r"[\w.-]+==[\w.]+", makefile.split("pip install -q ", 1)[1].splitlines()[0])
    )
    installs = _pip_installs()
    tools = _pins([a for a in installs[0] if "==" in a])
    assert tools == make_tools
    assert tools["mypy"] == build_requires["mypy"]
    # The package itself last, compiled with mypyc (no PILOTFISH_PURE_PYTHON anywhere).
    assert installs[-1][-1] == "/src"
    assert "--no-build-isolation" in installs[-1]
    assert "PILOTFISH_PURE_PYTHON" not in DOCKERFILE.read_text()
    compiled_check = [a for w, a in _instructions() if w == "RUN" and '.endswith(".so")' in a]
    assert compiled_check


def test_python_is_at_least_the_required_version() -> None:
    assert _pyproject()["project"]["requires-python"] == ">=3.11"
    assert "assert sys.version_info >= (3, 11)" in DOCKERFILE.read_text()
