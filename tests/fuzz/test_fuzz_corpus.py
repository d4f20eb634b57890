"""The fuzz corpus, replayed quickly: every seed and regression input of tests/fuzz/corpus/<target>/, then a
few thousand random mutations of them, through the same targets and crash rules as `python -m bench.fuzz`
(a crash is any exception other than the parser's documented error, or an input slower than 2 s).
atheris is not needed here; the long coverage-guided runs are `python -m bench.fuzz --runs N`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import fuzz  # noqa: E402

MUTATIONS = 2500


@pytest.fixture(scope="module")
def targets() -> dict[str, fuzz.Target]:
    return fuzz.build_targets()


def _report(runner: fuzz.Runner) -> str:
    return "\n".join(
        f"{c.signature} x{c.count}: {c.error}\ninput: {c.data[:200].hex()}\n{c.trace}" for c in runner.crashes.values()
    )


def test_every_target_has_a_seed_corpus(targets) -> None:
    assert set(targets) == set(fuzz.TARGET_NAMES)
    for name in fuzz.TARGET_NAMES:
        seeds = fuzz.load_corpus(name)
        assert seeds, f"tests/fuzz/corpus/{name}/ is empty; run python -m bench.fuzz --make-corpus"
        assert sum(map(len, seeds)) < 32 * 1024, f"the {name} corpus should stay a few KB"


@pytest.mark.parametrize("name", fuzz.TARGET_NAMES)
def test_corpus_and_mutations_raise_only_documented_errors(targets, name: str) -> None:
    runner = fuzz.Runner(targets[name], slow_s=2.0)
    seeds = fuzz.load_corpus(name)
    for data in fuzz.random_inputs(seeds, MUTATIONS, seed=sum(map(ord, name)), max_len=8192):
        runner(data)
    assert runner.runs == len(seeds) + MUTATIONS
    assert not runner.crashes, _report(runner)


def test_a_crash_is_caught_and_kept_smallest_first() -> None:
    def parse(data: bytes) -> None:
        if data.startswith(b"!"):
            raise KeyError("bug")
        if data:
            raise ValueError("documented")

    runner = fuzz.Runner(fuzz.Target("demo", parse, (ValueError,), "demo"))
    for data in (b"x", b"!long input", b"!", b""):
        runner(data)
    assert runner.runs == 4
    [crash] = runner.crashes.values()
    assert crash.signature.startswith("KeyError@") and crash.count == 2 and crash.data == b"!"
