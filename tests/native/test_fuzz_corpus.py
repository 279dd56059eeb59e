"""Replay the fuzz corpus of the C core (fuzz/) with any C compiler.

fuzz/fuzz_table.c is a libFuzzer harness; fuzz/replay_main.c is a plain
main() that feeds files to the same LLVMFuzzerTestOneInput, so these tests
need only gcc/cc (with ASan + UBSan when the compiler has them), not clang
or libFuzzer. They replay:

* fuzz/corpus/: the seeds, which must pass every check;
* fuzz/crashes/: reproducers of known, reported core bugs. Each must still
  fail its one check (a strict xfail: when csrc/ is fixed the test XPASSes,
  which fails the run, and the file moves to fuzz/corpus/) and pass every
  other check once that one is relaxed (FDN_FUZZ_KNOWN_BUGS);
* a few hundred pseudo-random inputs (the known bugs relaxed).

Skipped, with the reason, only when no C compiler is found or the fuzz/
sources are not beside the tests (a copy of tests/ outside the tree, as
tools/check_wheel.sh makes).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
SOURCES = [FUZZ / "replay_main.c", FUZZ / "fuzz_table.c", ROOT / "csrc" / "fdn_table.c"]
CORPUS = sorted((FUZZ / "corpus").glob("*")) if (FUZZ / "corpus").is_dir() else []
CRASHES = sorted((FUZZ / "crashes").glob("*")) if (FUZZ / "crashes").is_dir() else []

# reproducer file name -> why it fails (the FDN_FUZZ_KNOWN_BUGS name is the
# file name)
# None open. reserve-overflow (fdn_table_reserve: (used + extra) * 3 wrapped
# for extra > SIZE_MAX / 3, reporting room it had not made) is fixed and its
# reproducer is now an ordinary corpus file.
KNOWN_BUGS: dict[str, str] = {}


SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]

#: The reproducer tests have nothing to replay while no known bug is open
#: (without this, pytest skips their empty parameter sets with no useful reason).
needs_crashes = pytest.mark.skipif(
    not CRASHES, reason="no known core bug is open: fuzz/crashes/ holds no reproducer to replay"
)


def _compiler() -> list[str] | None:
    for candidate in (os.environ.get("CC", ""), "gcc", "cc", "clang"):
        argv = shlex.split(candidate)
        if argv and shutil.which(argv[0]):
            return argv
    return None


def _env(**extra: str) -> dict[str, str]:
    """The environment of the compiled driver: none of a sanitized parent's
    (tools/sanitize.sh preloads the ASan runtime into the Python process)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")
        and not k.startswith("FDN_FUZZ_")
    }
    # the harness counts allocations itself; LeakSanitizer fails under ptrace
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    env.update(extra)
    return env


def _compile(cc: list[str], out: Path, flags: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [*cc, "-g", "-O1", "-fno-omit-frame-pointer", *flags, f"-I{ROOT / 'csrc'}"]
    cmd += [str(p) for p in SOURCES] + ["-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """The replay driver, built once: (path, built with sanitizers)."""
    missing = [str(p) for p in SOURCES if not p.is_file()]
    if missing:
        pytest.skip(f"fuzz sources not beside the tests (copied tree?): {missing}")
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (CC, gcc, cc, clang) to build fuzz/replay_main.c")
    out = tmp_path_factory.mktemp("fuzz") / "replay"
    built = _compile(cc, out, SAN_FLAGS)
    sanitized = built.returncode == 0
    if sanitized:
        # a compiler may accept the flags yet lack the runtime: run it once
        probe = subprocess.run([str(out)], capture_output=True, text=True, env=_env(), timeout=60)
        sanitized = probe.returncode == 0
    if not sanitized:
        built = _compile(cc, out, [])
        assert built.returncode == 0, built.stderr
    return out, sanitized


def _replay(
    driver: tuple[Path, bool], *args: str, known: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(driver[0]), *args],
        capture_output=True,
        text=True,
        env=_env(FDN_FUZZ_KNOWN_BUGS=known),
        timeout=600,
    )


def test_driver_has_sanitizers(driver: tuple[Path, bool]) -> None:
    if not driver[1]:
        pytest.skip("the C compiler lacks ASan/UBSan: the corpus replays unsanitized")


def test_corpus_is_there() -> None:
    if not FUZZ.is_dir():
        pytest.skip("fuzz/ not beside the tests")
    assert len(CORPUS) >= 5, CORPUS
    assert {p.name for p in CRASHES} == set(KNOWN_BUGS), (
        "every reproducer in fuzz/crashes/ needs an entry in KNOWN_BUGS (and fuzz/run.sh's"
        " FDN_FUZZ_KNOWN_BUGS default)"
    )


@pytest.mark.skipif(not CORPUS, reason="fuzz/corpus/ not beside the tests (copied tree?)")
@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_replays_clean(driver: tuple[Path, bool], path: Path) -> None:
    """The seeds pass every check, none relaxed."""
    run = _replay(driver, str(path))
    assert run.returncode == 0, run.stderr[-4000:]
    assert "all checks passed" in run.stderr


@needs_crashes
@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS.get(p.name, "?")))
        for p in CRASHES
    ],
    ids=[p.name for p in CRASHES],
)
def test_known_bug_is_fixed(driver: tuple[Path, bool], path: Path) -> None:
    """Fails while the bug is in csrc/ (xfail); XPASS means fixed: move the
    file to fuzz/corpus/ and drop its KNOWN_BUGS entry and run.sh default."""
    run = _replay(driver, str(path))
    assert run.returncode == 0, run.stderr[-2000:]


@needs_crashes
@pytest.mark.parametrize("path", CRASHES, ids=[p.name for p in CRASHES])
def test_known_bug_reproducer_is_exact(driver: tuple[Path, bool], path: Path) -> None:
    """The reproducer trips its own check and nothing else."""
    strict = _replay(driver, str(path))
    if strict.returncode == 0:
        pytest.skip(f"{path.name} no longer fails: see test_known_bug_is_fixed")
    assert "check failed" in strict.stderr, strict.stderr[-4000:]
    relaxed = _replay(driver, str(path), known=path.name)
    assert relaxed.returncode == 0, relaxed.stderr[-4000:]


def test_random_inputs(driver: tuple[Path, bool]) -> None:
    """A few hundred pseudo-random inputs (fixed seed), known bugs relaxed."""
    run = _replay(driver, "--random", "300", "12345", known=",".join(KNOWN_BUGS))
    assert run.returncode == 0, run.stderr[-4000:]
    assert "300 inputs, all checks passed" in run.stderr
