"""Coverage-guided fuzzing of the decoders under AddressSanitizer and UndefinedBehaviorSanitizer.

    python -m fuzz.run --seconds 3600            # both targets side by side, an hour each
    python -m fuzz.run --seconds 60 --target decode_parts
    python -m fuzz.run --coverage                # lines of csrc/ the grown corpora reach

Needs clang and atheris (`pip install atheris`). Builds the C++ extension with ASan, UBSan
(`-fno-sanitize-recover=all`) and libFuzzer's coverage instrumentation into build/fuzz/, loads
it in place of the usual one, and runs each target of fuzz/targets.py under atheris with the
ASan runtime preloaded. The working corpus grows in build/fuzz/corpus/TARGET (seeded from
fuzz/corpus/TARGET); findings land in build/fuzz/findings/ and the logs in build/fuzz/*.log.
A finding, once fixed, goes into fuzz/corpus/TARGET, which tests/test_fuzz.py replays.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "fuzz"
EXTENSION = OUT / f"_coder{sysconfig.get_config_var('EXT_SUFFIX')}"
SANITIZE = ["-fsanitize=address,undefined,fuzzer-no-link", "-fno-sanitize=vptr,function", "-fno-sanitize-recover=all"]

# Run in each target's process: the sanitized extension replaces pillow_unz._coder before the
# package is imported; the package's Python is instrumented for coverage too.
_ENGINE = """
import importlib.util, sys
import atheris
spec = importlib.util.spec_from_file_location("pillow_unz._coder", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["pillow_unz._coder"] = module
with atheris.instrument_imports(include=["pillow_unz", "fuzz"]):
    from fuzz import targets
atheris.Setup([sys.argv[0], *sys.argv[3:]], targets.TARGETS[sys.argv[2]])
atheris.Fuzz()
"""


def build() -> Path:
    """The sanitized extension, rebuilt when a source is newer."""
    import pybind11

    sources = sorted((ROOT / "csrc").glob("*")) + [Path(__file__)]  # the flags live here
    if EXTENSION.exists() and all(s.stat().st_mtime < EXTENSION.stat().st_mtime for s in sources):
        return EXTENSION
    OUT.mkdir(parents=True, exist_ok=True)
    command = ["clang++", "-std=c++17", "-O1", "-g", "-fno-omit-frame-pointer", "-fPIC", "-shared", "-pthread",
               *SANITIZE, f"-I{ROOT / 'csrc'}", f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}",
               str(ROOT / "csrc" / "bindings.cpp"), "-o", str(EXTENSION) + ".new"]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    os.replace(str(EXTENSION) + ".new", EXTENSION)  # a new file: running fuzzers keep the old one
    return EXTENSION


def start(target: str, seconds: int, extension: Path) -> subprocess.Popen:
    import atheris

    corpus, findings = OUT / "corpus" / target, OUT / "findings" / target
    findings.mkdir(parents=True, exist_ok=True)
    if not corpus.exists():
        shutil.copytree(ROOT / "fuzz" / "corpus" / target, corpus)
    env = dict(os.environ, PYTHONPATH=str(ROOT), LD_PRELOAD=str(Path(atheris.path()) / "asan_with_fuzzer.so"),
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    args = [sys.executable, "-c", _ENGINE, str(extension), target, str(corpus), f"-max_total_time={seconds}",
            "-timeout=30", "-rss_limit_mb=4096", "-malloc_limit_mb=2048", f"-artifact_prefix={findings}/",
            "-print_final_stats=1"]
    log = open(OUT / f"{target}.log", "w")
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def summary(target: str) -> str:
    """The last coverage line of a target's log and its findings."""
    text = (OUT / f"{target}.log").read_text(errors="replace")
    lines = [l for l in text.splitlines() if re.match(r"#\d+\s", l)]
    findings = sorted(p.name for p in (OUT / "findings" / target).iterdir())
    return f"{target}: {lines[-1] if lines else 'no progress line'}; findings: {findings or 'none'}"


# Replays the corpora through the targets with a gcov build of the extension (no sanitizers).
_REPLAY = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("pillow_unz._coder", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["pillow_unz._coder"] = module
from fuzz import targets
for target, folder in zip(sys.argv[2::2], sys.argv[3::2]):
    for path in sorted(Path(folder).iterdir()):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a running fuzzer replaced it
            continue
        targets.TARGETS[target](data)
"""


def coverage(names: list[str]) -> str:
    """Line coverage of each file of csrc/ by the corpora of build/fuzz/corpus (or, where a
    target has not run, its seeds)."""
    import pybind11

    out = OUT / "coverage"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    include = [f"-I{ROOT / 'csrc'}", f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
    obj, so = out / "bindings.o", out / EXTENSION.name
    subprocess.run(["g++", "-std=c++17", "-O0", "--coverage", "-fPIC", "-pthread", *include, "-c",
                    str(ROOT / "csrc" / "bindings.cpp"), "-o", str(obj)], check=True)
    subprocess.run(["g++", "-shared", "--coverage", "-pthread", str(obj), "-o", str(so)], check=True)
    folders = []
    for name in names:
        grown = OUT / "corpus" / name
        folders += [name, str(grown if grown.exists() else ROOT / "fuzz" / "corpus" / name)]
    subprocess.run([sys.executable, "-c", _REPLAY, str(so), *folders], check=True, cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    report = subprocess.run(["gcov", "-n", "-o", str(out), str(ROOT / "csrc" / "bindings.cpp")],
                            capture_output=True, text=True, check=True, cwd=out).stdout
    rows = re.findall(r"File '([^']*csrc/[^']+)'\nLines executed:([\d.]+)% of (\d+)", report)
    return "\n".join(f"{Path(f).name:<16} {pct:>6}% of {n} lines" for f, pct, n in rows)


def main(argv: list[str] | None = None) -> int:
    from . import targets

    p = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=60, help="how long each target runs")
    p.add_argument("--target", choices=sorted(targets.TARGETS), action="append", help="default: all, side by side")
    p.add_argument("--coverage", action="store_true", help="report the lines of csrc/ the corpora reach, and stop")
    args = p.parse_args(argv)
    names = args.target or sorted(targets.TARGETS)
    if args.coverage:
        print(coverage(names))
        return 0
    extension = build()
    runs = {name: start(name, args.seconds, extension) for name in names}
    failed = [name for name, run in runs.items() if run.wait() != 0]
    for name in names:
        print(summary(name))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
