"""Build the Go side of `gmpsim compare` (gosrc/, shipped as package data) once into a cache.

The binary is keyed by a hash of the Go source, the offsets derived from this machine's runtime2.go,
`go version` and whether it is a cgo build; a changed source or toolchain gives a new key and so a
new build. Builds use only the standard library and work offline (GOPROXY=off, GOFLAGS=-mod=mod)
with GOCACHE/GOPATH under the cache directory, so an unusual HOME (root in CI) does not matter.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BINARY = "gmpsim-go"
INSTALL_HINT = "install Go, e.g. `apt-get install golang-go` (Debian/Ubuntu), and put `go` on PATH"


class GoError(RuntimeError):
    """The Go side cannot be had (no toolchain, a failed build); ``str()`` is one line."""


@dataclass(frozen=True)
class GoBinary:
    path: Path
    key: str
    cgo: bool
    go_version: str
    built: bool  # True when this call built it, False when it came from the cache


def find_go() -> str:
    """The `go` command on PATH, or GoError saying how to install it."""
    go = shutil.which("go")
    if go is None:
        raise GoError(f"no `go` on PATH: `gmpsim compare` runs the scenario on real Go; {INSTALL_HINT}")
    return go


def have_gcc() -> bool:
    """A C compiler for a real cgo binary (`go build` with CGO_ENABLED=1 runs gcc)."""
    return shutil.which(os.environ.get("CC", "gcc")) is not None


def cache_dir() -> Path:
    """$GMPSIM_GO_CACHE, else $XDG_CACHE_HOME/gmpsim/go, else ~/.cache/gmpsim/go."""
    if os.environ.get("GMPSIM_GO_CACHE"):
        return Path(os.environ["GMPSIM_GO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gmpsim" / "go"


def go_version(go: str) -> str:
    try:
        out = subprocess.run([go, "version"], capture_output=True, text=True, timeout=60, env=_go_env(cache_dir()))
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GoError(f"`{go} version` failed: {e}") from None
    if out.returncode != 0:
        raise GoError(f"`{go} version` failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    return out.stdout.strip()


def _go_env(cache: Path, cgo: bool = False) -> dict:
    """The toolchain's environment: its build cache and GOPATH under ``cache`` (the default cache
    directory, shared by every binary key), offline, cgo only when asked."""
    env = dict(os.environ)
    env.update(GOCACHE=str(cache / "gocache"), GOPATH=str(cache / "gopath"), GOFLAGS="-mod=mod",
               GOPROXY="off", GO111MODULE="on", GOENV="off", GOTOOLCHAIN="local",
               CGO_ENABLED="1" if cgo else "0")
    return env


def source_files() -> dict[str, bytes]:
    """gosrc/ as shipped: relative path -> content."""
    root = importlib.resources.files("coordinator.compare") / "gosrc"
    files: dict[str, bytes] = {}

    def walk(node, prefix: str) -> None:
        for entry in sorted(node.iterdir(), key=lambda e: e.name):
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith((".go", ".s", ".mod")):
                files[prefix + entry.name] = entry.read_bytes()
    walk(root, "")
    return files


# --- schedt field offsets, read from this machine's runtime2.go -----------------------------------

_SIZES = {"uint64": 8, "int64": 8, "uintptr": 8, "muintptr": 8, "puintptr": 8, "guintptr": 8,
          "mutex": 8, "int32": 4, "uint32": 4, "bool": 1, "uint8": 1}
_FIELD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*)\s+([A-Za-z0-9_.]+)\s*(//.*)?$")


def schedt_offsets(runtime2: str) -> dict[str, int]:
    """Offsets of schedt.mnext and schedt.nmfreed (64-bit), laid out the way the Go compiler does
    (each field aligned to its size) from the struct's text, up to nmfreed. Raises GoError when the
    struct holds a type this reader does not know before those fields."""
    start = runtime2.find("type schedt struct {")
    if start < 0:
        raise GoError("runtime2.go: no `type schedt struct`")
    want = {"mnext", "nmfreed"}
    offsets: dict[str, int] = {}
    offset = 0
    for line in runtime2[start:].splitlines()[1:]:
        code = line.split("//", 1)[0].strip()
        if not code:
            continue
        if code == "}":
            break
        m = _FIELD.match(code)
        if not m or m.group(2) not in _SIZES:
            raise GoError(f"runtime2.go: schedt field {code!r}: unknown layout before mnext/nmfreed")
        size = _SIZES[m.group(2)]
        for name in (n.strip() for n in m.group(1).split(",")):
            offset = (offset + size - 1) // size * size
            if name in want:
                offsets[name] = offset
            offset += size
        if want <= offsets.keys():
            return offsets
    raise GoError("runtime2.go: schedt has no mnext/nmfreed")


def goroot(go: str, cache: Path) -> Path:
    out = subprocess.run([go, "env", "GOROOT"], capture_output=True, text=True, timeout=60, env=_go_env(cache))
    if out.returncode != 0 or not out.stdout.strip():
        raise GoError("`go env GOROOT` failed")
    return Path(out.stdout.strip())


def offsets_source(offsets: dict[str, int]) -> bytes:
    return (b"package sched\n\n"
            b"// Generated by coordinator/compare/gobuild.py from $(go env GOROOT)/src/runtime/runtime2.go.\n"
            b"const (\n\tOffMnext   = %d\n\tOffNmfreed = %d\n)\n" % (offsets["mnext"], offsets["nmfreed"]))


def build_key(files: dict[str, bytes], version: str, cgo: bool) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name] + b"\0")
    h.update(version.encode() + b"\0" + (b"cgo" if cgo else b"nocgo"))
    return h.hexdigest()[:20]


def ensure_built(cgo: bool = False, go: str | None = None, files: dict[str, bytes] | None = None,
                 version: str | None = None, binaries: Path | None = None) -> GoBinary:
    """The cached binary for this source and toolchain, building it when missing. ``files`` and
    ``version`` override the shipped source and `go version`, ``binaries`` the directory the keyed
    binaries live in (default: the cache directory); tests use them to change the key."""
    go = go or find_go()
    toolcache = cache_dir()
    cache = binaries or toolcache
    version = version or go_version(go)
    files = dict(files if files is not None else source_files())
    runtime2 = goroot(go, toolcache) / "src" / "runtime" / "runtime2.go"
    try:
        files["sched/offsets.go"] = offsets_source(schedt_offsets(runtime2.read_text()))
    except OSError:
        pass  # no runtime source: keep the shipped Go 1.19 offsets (the /proc check still guards them)
    key = build_key(files, version, cgo)
    target = cache / key / BINARY
    if target.exists():
        return GoBinary(target, key, cgo, version, built=False)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    except OSError as e:
        raise GoError(f"cannot use the Go build cache {cache}: {e.strerror or e} "
                      "(set GMPSIM_GO_CACHE to a writable directory)") from None
    try:
        for name, data in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(data)
        out = subprocess.run([go, "build", "-trimpath", "-o", str(work / BINARY), "."], cwd=work,
                             capture_output=True, text=True, timeout=600, env=_go_env(toolcache, cgo))
        if out.returncode != 0:
            last = (out.stderr or out.stdout).strip().splitlines()
            raise GoError(f"building the Go program failed: {last[-1] if last else out.returncode}")
        (cache / key).mkdir(exist_ok=True)
        os.replace(work / BINARY, target)  # atomic: a concurrent build of the same key is harmless
        (cache / key / "go-version").write_text(version + "\n")
    except subprocess.TimeoutExpired:
        raise GoError("building the Go program took more than 600 s") from None
    except OSError as e:
        raise GoError(f"building the Go program in {cache}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return GoBinary(target, key, cgo, version, built=True)
